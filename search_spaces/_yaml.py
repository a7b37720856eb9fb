"""User-defined search spaces from YAML (format: ``docs/search_spaces.md``).

A value is fixed (a scalar), a choice (a list) or, for integers, an inclusive range
(``{low: 4, high: 16}``). Every mistake is a one-line ``UserError`` naming the file and the key.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from cvt import UserError
from cvt import read_yaml

from ._cvt import BLOCK_KEYS, STAGE_KEYS, CvTSpace, StageOptions
from ._space import SearchSpace

__all__ = ["load_space", "space_from_dict"]

_TOP_KEYS = ("name", "family", "description", "img_size", "reference", "stages")
_STAGE_KEYS = STAGE_KEYS + BLOCK_KEYS + ("drop_path_rate",)
_REQUIRED_STAGE_KEYS = ("depth", "embed_dim", "num_heads")

# Parsers of the ``family`` key's spaces; CCT registers its own (see ``_cct``).
_FAMILIES: dict[str, Callable[[dict, str], SearchSpace]] = {}


def _values(value: Any, where: str) -> tuple:
    """Scalar -> fixed, list -> choices, ``{low, high}`` -> inclusive integer range."""
    if isinstance(value, dict):
        if set(value) != {"low", "high"}:
            raise UserError(f"{where}: a range is written {{low: 1, high: 4}}, got keys {sorted(value)}")
        low, high = value["low"], value["high"]
        if any(isinstance(v, bool) or not isinstance(v, int) for v in (low, high)) or low > high:
            raise UserError(f"{where}: range bounds must be integers with low <= high, got {low!r}..{high!r}")
        return tuple(range(low, high + 1))
    if isinstance(value, list):
        if not value:
            raise UserError(f"{where}: an empty list allows nothing; give at least one value")
        if any(isinstance(v, (list, dict)) for v in value):
            raise UserError(f"{where}: choices must be plain values, got {value!r}")
        return tuple(value)
    if value is None:
        raise UserError(f"{where}: no value given")
    return (value,)


def _cvt_from_dict(data: dict, where: str) -> CvTSpace:
    stages = data.get("stages")
    if not isinstance(stages, list) or not stages:
        raise UserError(f"{where}: 'stages' must be a non-empty list with one mapping per stage")
    options = []
    for i, stage in enumerate(stages):
        at = f"{where}: stages[{i}]"
        if not isinstance(stage, dict):
            raise UserError(f"{at} must be a mapping of option -> value(s)")
        unknown = sorted(set(stage) - set(_STAGE_KEYS))
        if unknown:
            raise UserError(f"{at} has unknown key(s) {', '.join(map(str, unknown))}; known: {', '.join(_STAGE_KEYS)}")
        missing = [k for k in _REQUIRED_STAGE_KEYS if k not in stage]
        if missing:
            raise UserError(f"{at} lacks {', '.join(missing)}")
        # CvT-13's stem (7x7 stride 4) for the first stage; cls token in the last stage only.
        kw: dict[str, Any] = {"patch_size": (7,), "patch_stride": (4,)} if i == 0 else {}
        kw["cls_token"] = (i == len(stages) - 1,)
        for key, value in stage.items():
            kw[key] = value if key == "drop_path_rate" else _values(value, f"{at}.{key}")
        options.append(StageOptions(**kw))
    extra = {"reference": data["reference"]} if "reference" in data else {}
    return CvTSpace(name=data["name"], stages=tuple(options), img_size=data.get("img_size", 224),
                    description=data.get("description", ""), **extra)


_FAMILIES["cvt"] = _cvt_from_dict


def space_from_dict(data: Any, *, source: str = "<dict>") -> SearchSpace:
    """A space from its YAML mapping (already parsed). ``source`` prefixes error messages."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: a search space file is a mapping with name, family and stages "
                        f"(see docs/search_spaces.md)")
    family = data.get("family", "cvt")
    if family not in _FAMILIES:
        raise UserError(f"{source}: unknown family {family!r}; use one of {', '.join(sorted(_FAMILIES))}")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise UserError(f"{source}: give the space a 'name' (a non-empty string)")
    allowed = _TOP_KEYS if family == "cvt" else _TOP_KEYS[:-1] + ("options",)
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise UserError(f"{source}: unknown key(s) {', '.join(map(str, unknown))}; known: {', '.join(allowed)}")
    try:
        return _FAMILIES[family](data, source)
    except UserError as err:
        message = str(err)
        raise UserError(message if message.startswith(source) else f"{source}: {message}") from None


def load_space(path: str | Path) -> SearchSpace:
    """Read a user-defined space from a YAML file.

    Raises:
        UserError: unreadable file, invalid YAML (with the line), or an invalid space (naming the key).
    """
    return space_from_dict(read_yaml(path, "search space file"), source=str(path))
