"""cvt-nas model families: CvT (Wu et al. 2021) and CCT (Hassani et al. 2021), with their configurations.

Importing this package first makes torchvision importable on CPU-only torch (see
``_torchvision_compat``), then registers every preset with timm::

    import cvt, timm
    model = timm.create_model("cvt_13", num_classes=10)
"""
from ._torchvision_compat import ensure_torchvision

ensure_torchvision()

from ._checkpoint import load_checkpoint  # noqa: E402
from ._cct_config import POOL as CCT_POOL, POOLINGS, POS_EMBEDS, CCTConfig  # noqa: E402
from ._config import PROJ_METHODS, BlockSpec, CvTConfig, read_yaml  # noqa: E402
from ._errors import CheckpointError, ConfigError, UserError  # noqa: E402
from .cct import PRESETS as CCT_PRESETS, CCT  # noqa: E402
from .cvt import PRESETS as CVT_PRESETS, CvT  # noqa: E402

__all__ = ["CvT", "CvTConfig", "CVT_PRESETS", "CCT", "CCTConfig", "CCT_PRESETS", "build_model", "load_checkpoint",
           "preset", "load_config", "read_yaml", "UserError", "ConfigError", "CheckpointError", "BlockSpec",
           "PROJ_METHODS", "POOLINGS", "POS_EMBEDS", "CCT_POOL"]

_MODELS = {CvTConfig: CvT, CCTConfig: CCT}


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
    presets = {**CVT_PRESETS, **CCT_PRESETS}
    try:
        return presets[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; known: {', '.join(sorted(presets))}") from None


# MODEL.NAME of a config file -> the family's config class.
_FAMILIES_BY_NAME = {"cls_cvt": CvTConfig, "cct": CCTConfig}


def load_config(name_or_path):
    """A preset name (``"cvt_13"``) or a config YAML of any family, told apart by its ``MODEL.NAME``."""
    text = str(name_or_path)
    if not text.endswith((".yaml", ".yml")) and text in {**CVT_PRESETS, **CCT_PRESETS}:
        return preset(text)
    if not text.endswith((".yaml", ".yml")) and "/" not in text:
        preset(text)  # raises the unknown-preset error that lists the known names
    data = read_yaml(text)
    name = (data.get("MODEL") or {}).get("NAME", "cls_cvt") if isinstance(data, dict) else None
    config_cls = _FAMILIES_BY_NAME.get(name)
    if config_cls is None:
        raise ConfigError(f"{text}: MODEL.NAME = {name!r} is not a known model family; "
                          f"use one of {', '.join(_FAMILIES_BY_NAME)}")
    return config_cls.from_yaml(text)
