"""Search spaces over CvT (and CCT) architectures: plain data with one adapter per backend.

    from search_spaces import get_space
    space = get_space("cvt13-nas")            # or "cvt", "cct", "path/to/space.yaml"
    params = space.sample(trial)              # Optuna, define-by-run; flat names like "stage2.block07.kv_stride"
    config = space.decode(params)             # a validated CvTConfig (CCTConfig for "cct")
    tune_space = space.to_tune()              # the same names for Ray Tune

Models never import this package; spaces only produce configs.
"""
from ._cct import CCTSpace
from ._cvt import CvTSpace, StageOptions
from ._params import Choice, IntRange
from ._registry import get_space, list_spaces, register_space
from ._space import SearchSpace
from ._yaml import load_space, space_from_dict

__all__ = ["get_space", "list_spaces", "register_space", "load_space", "space_from_dict", "SearchSpace",
           "CvTSpace", "CCTSpace", "StageOptions", "Choice", "IntRange"]
