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
from ._family import FAMILIES, Family, family_named, family_of, register_family  # noqa: E402
from .cct import FAMILY as _CCT, PRESETS as CCT_PRESETS, CCT  # noqa: E402
from .cvt import FAMILY as _CVT, PRESETS as CVT_PRESETS, CvT  # noqa: E402

__all__ = ["CvT", "CvTConfig", "CVT_PRESETS", "CCT", "CCTConfig", "CCT_PRESETS", "build_model", "load_checkpoint",
           "preset", "load_config", "read_yaml", "UserError", "ConfigError", "CheckpointError", "BlockSpec",
           "PROJ_METHODS", "POOLINGS", "POS_EMBEDS", "CCT_POOL", "Family", "FAMILIES", "register_family",
           "family_of", "family_named"]

register_family(_CVT)
register_family(_CCT)


def build_model(config, num_classes: int = 1000):
    """The model of any family for its config (``CvTConfig`` -> ``CvT``, ...)."""
    return family_of(config).model_cls(config, num_classes=num_classes)


def _presets() -> dict:
    return {name: config for family in FAMILIES.values() for name, config in family.presets.items()}


def preset(name: str):
    """The config of a registered preset, e.g. ``preset("cvt_13")``."""
    presets = _presets()
    try:
        return presets[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; known: {', '.join(sorted(presets))}") from None


def load_config(name_or_path):
    """A preset name (``"cvt_13"``) or a config YAML of any family, told apart by its ``MODEL.NAME``."""
    text = str(name_or_path)
    if not text.endswith((".yaml", ".yml")) and text in _presets():
        return preset(text)
    if not text.endswith((".yaml", ".yml")) and "/" not in text:
        preset(text)  # raises the unknown-preset error that lists the known names
    data = read_yaml(text)
    name = (data.get("MODEL") or {}).get("NAME", "cls_cvt") if isinstance(data, dict) else None
    families = [f for f in FAMILIES.values() if f.yaml_name == name]
    if not families:
        raise ConfigError(f"{text}: MODEL.NAME = {name!r} is not a known model family; "
                          f"use one of {', '.join(f.yaml_name for f in FAMILIES.values())}")
    return families[0].config_cls.from_yaml(text)
