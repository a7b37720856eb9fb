"""Model families: one record per family, read by everything that builds, names or loads a model.

A family is a config dataclass, the model it builds, its presets, the ``MODEL.NAME`` its reference YAML
files carry and a timm-registered variant that takes ``config=``. ``cvt.build_model``, ``cvt.preset``,
``cvt.load_config`` and the engine (``nas.cost``, exports, ``nas.latency``, ``nas.summary``) look a
config's family up here instead of switching on its class.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ._errors import ConfigError

__all__ = ["Family", "FAMILIES", "register_family", "family_of", "family_named"]


@dataclass(frozen=True)
class Family:
    """One model family.

    Attributes:
        name: short name (``"cvt"``, ``"cct"``): spaces' ``family:`` key, engine registries.
        config_cls: the config dataclass (``from_yaml``, ``from_dict``, ``to_dict``, ``arch_id``, ``replace``,
            ``scale_width``).
        model_cls: ``model_cls(config, num_classes=...)`` builds the model.
        presets: preset name -> config.
        yaml_name: ``MODEL.NAME`` in the family's reference-format YAML files.
        timm_name: a timm-registered variant that accepts ``config=PATH``.
    """

    name: str
    config_cls: type
    model_cls: type
    presets: Mapping[str, Any]
    yaml_name: str
    timm_name: str


FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Add a family (its name and config class must be new)."""
    if family.name in FAMILIES or any(f.config_cls is family.config_cls for f in FAMILIES.values()):
        raise ConfigError(f"model family {family.name!r} ({family.config_cls.__name__}) is registered already")
    FAMILIES[family.name] = family
    return family


def family_of(config: Any) -> Family:
    """The family whose config class ``config`` is an instance of."""
    for family in FAMILIES.values():
        if isinstance(config, family.config_cls):
            return family
    raise ConfigError(f"no model family takes a {type(config).__name__}; known configs: "
                      f"{', '.join(f.config_cls.__name__ for f in FAMILIES.values())}")


def family_named(name: str) -> Family:
    """The family called ``name`` (its short name, its ``MODEL.NAME`` or its config class name)."""
    for family in FAMILIES.values():
        if name in (family.name, family.yaml_name, family.config_cls.__name__):
            return family
    raise ConfigError(f"{name!r} is not a known model family; use one of {', '.join(FAMILIES)}")
