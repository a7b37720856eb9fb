"""cvt-nas model families: CvT (Wu et al. 2021) and its configuration.

Importing this package first makes torchvision importable on CPU-only torch (see
``_torchvision_compat``), then registers every preset with timm::

    import cvt, timm
    model = timm.create_model("cvt_13", num_classes=10)
"""
from ._torchvision_compat import ensure_torchvision

ensure_torchvision()

from ._checkpoint import load_checkpoint  # noqa: E402
from ._config import CvTConfig  # noqa: E402
from ._errors import CheckpointError, ConfigError, UserError  # noqa: E402
from .cvt import PRESETS as CVT_PRESETS, CvT  # noqa: E402

__all__ = ["CvT", "CvTConfig", "CVT_PRESETS", "build_model", "load_checkpoint", "preset",
           "UserError", "ConfigError", "CheckpointError"]

_MODELS = {CvTConfig: CvT}


def build_model(config, num_classes: int = 1000):
    """The model of any family for its config (``CvTConfig`` -> ``CvT``, ...)."""
    try:
        model_cls = _MODELS[type(config)]
    except KeyError:
        raise ConfigError(f"no model family takes a {type(config).__name__}; "
                          f"known configs: {', '.join(c.__name__ for c in _MODELS)}") from None
    return model_cls(config, num_classes=num_classes)


def preset(name: str):
    """The config of a registered preset, e.g. ``preset("cvt_13")``."""
    presets = {**CVT_PRESETS}
    try:
        return presets[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; known: {', '.join(sorted(presets))}") from None
