"""CCT spaces: one choice per option of the whole model (CCT layers are all alike).

Flat names (stable): ``num_layers``, ``embed_dim``, ``num_heads``, ``mlp_ratio``, ``kernel_size``,
``conv_layers``, ``pos_embed``, ``pooling``. The tokenizer is convolutional (CCT) with the authors'
derived stride and padding; everything else keeps ``CCTConfig``'s defaults.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar, Mapping

from cvt import POOLINGS, POS_EMBEDS, CCTConfig, UserError

from ._params import Choice, IntRange, Param
from ._space import SearchSpace
from ._yaml import _FAMILIES, _values

__all__ = ["CCTSpace", "CCT_KEYS"]

CCT_KEYS = ("num_layers", "embed_dim", "num_heads", "mlp_ratio", "kernel_size", "conv_layers", "pos_embed",
            "pooling")
_INT_KEYS = ("num_layers", "embed_dim", "num_heads", "kernel_size", "conv_layers")


@dataclass(frozen=True, repr=False)
class CCTSpace(SearchSpace):
    """A CCT space: a tuple of allowed values per option (one value = fixed). Defaults: CCT-7/3x1.

    Example:
        >>> space = CCTSpace("c", num_layers=(2, 4), embed_dim=128, num_heads=(2, 4), mlp_ratio=1.0)
        >>> space.cardinality()
        4
    """

    name: str
    num_layers: tuple[int, ...] = (7,)
    embed_dim: tuple[int, ...] = (256,)
    num_heads: tuple[int, ...] = (4,)
    mlp_ratio: tuple[float, ...] = (2.0,)
    kernel_size: tuple[int, ...] = (3,)
    conv_layers: tuple[int, ...] = (1,)
    pos_embed: tuple[str, ...] = ("learnable",)
    pooling: tuple[str, ...] = ("seqpool",)
    img_size: int = 32
    description: str = ""
    reference: str = "cct_7_3x1_32"  # compared with by the self-check (a preset name or a model YAML)
    family: ClassVar[str] = "cct"

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name in CCT_KEYS:
                value = getattr(self, f.name)
                object.__setattr__(self, f.name, tuple(value) if isinstance(value, (list, tuple, range)) else (value,))
        where = f"space {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise UserError("a search space needs a non-empty name")
        for key in _INT_KEYS:
            for v in getattr(self, key):
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise UserError(f"{where}: {key}: {v!r} is not an integer >= 1")
        for v in self.mlp_ratio:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or int(min(self.embed_dim) * v) < 1:
                raise UserError(f"{where}: mlp_ratio: {v!r} is not a positive number (embed_dim x ratio >= 1)")
        for key, allowed in (("pos_embed", POS_EMBEDS), ("pooling", POOLINGS)):
            for v in getattr(self, key):
                if v not in allowed:
                    raise UserError(f"{where}: {key}: {v!r} is not one of {', '.join(allowed)}")
        for h in self.num_heads:
            for d in self.embed_dim:
                if d % h:
                    raise UserError(f"{where}: num_heads: {h} does not divide embed_dim {d}; every head count "
                                    f"must divide every width")
        if isinstance(self.img_size, bool) or not isinstance(self.img_size, int) or self.img_size < 1:
            raise UserError(f"{where}: img_size {self.img_size!r} is not a positive integer")
        params: list[Param] = []
        constants: dict[str, Any] = {}
        for key in CCT_KEYS:
            values = getattr(self, key)
            if key == "mlp_ratio":
                values = tuple(float(v) for v in values)
            if len(values) == 1:
                constants[key] = values[0]
            elif key == "num_layers" and values == tuple(range(min(values), max(values) + 1)):
                params.append(IntRange(key, min(values), max(values)))
            else:
                params.append(Choice(key, values))
        self._define(params, constants)

    def _build(self, values: Mapping[str, Any]) -> CCTConfig:
        return CCTConfig(img_size=self.img_size, **{key: values[key] for key in CCT_KEYS})

    def _values_of(self, config: Any) -> dict[str, Any]:
        if not isinstance(config, CCTConfig):
            raise UserError(f"space {self.name!r} holds CCT configs, not {type(config).__name__}")
        values = {key: getattr(config, key) for key in CCT_KEYS}
        for key in ("num_heads", "mlp_ratio"):  # per-layer values are not in this space unless uniform
            layer_values = set(config.layer_values(key))
            if len(layer_values) == 1:
                values[key] = layer_values.pop()
        return values


def _cct_from_dict(data: dict, where: str) -> CCTSpace:
    options = data.get("options") or {}
    if not isinstance(options, dict):
        raise UserError(f"{where}: 'options' must be a mapping of option -> value(s)")
    unknown = sorted(set(options) - set(CCT_KEYS))
    if unknown:
        raise UserError(f"{where}: options has unknown key(s) {', '.join(map(str, unknown))}; "
                        f"known: {', '.join(CCT_KEYS)}")
    kw = {key: _values(value, f"{where}: options.{key}") for key, value in options.items()}
    extra = {"reference": data["reference"]} if "reference" in data else {}
    return CCTSpace(name=data["name"], img_size=data.get("img_size", 32), description=data.get("description", ""),
                    **extra, **kw)


_FAMILIES["cct"] = _cct_from_dict
