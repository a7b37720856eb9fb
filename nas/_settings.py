"""Helpers for validated settings objects (frozen dataclasses read back from recipes and manifests)."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from cvt import UserError


def settings_from_dict(cls: Any, data: Mapping[str, Any], what: str) -> Any:
    """``cls(**data)`` for a settings dataclass; keys it lacks are one error naming the known ones."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"unknown {what} setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return cls(**dict(data))
