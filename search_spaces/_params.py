"""Search dimensions: frozen value objects with a stable flat name and simple values.

Two kinds, each adapted once to every backend:

* :class:`Choice`: one of a finite tuple of values (ints, floats, strings or bools), Optuna
  ``suggest_categorical`` / Tune ``tune.choice``.
* :class:`IntRange`: an integer in ``[low, high]``, **both bounds inclusive**; Optuna ``suggest_int(low, high)``
  (inclusive) and Tune ``tune.randint(low, high + 1)`` (Tune's upper bound is exclusive).

A dimension may be *conditional*: ``active_if=("stage2.depth", 7)`` means it exists only when the value
of ``stage2.depth`` is greater than 7 (block 7 of a stage exists only if the stage has at least 8 blocks).
That is all the define-by-run structure the spaces need.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from cvt import UserError

__all__ = ["Choice", "IntRange", "Param"]


def _canonical(values: tuple, value: Any, name: str) -> Any:
    """``value`` as the space's own object (backends hand back numpy scalars, ints for floats, ...)."""
    if isinstance(value, np.generic):
        value = value.item()
    for v in values:
        # bool is an int in Python: never let True stand for 1 or the reverse.
        if isinstance(v, bool) != isinstance(value, bool):
            continue
        if v == value:
            return v
    shown = ", ".join(repr(v) for v in values)
    raise UserError(f"{name} = {value!r} is not in this search space; allowed: {shown}")


@dataclass(frozen=True)
class Choice:
    """One of ``values`` (ordered as given; the order is the encoding of non-numeric values).

    Example:
        >>> Choice("stage0.block00.kv_stride", (1, 2)).cardinality
        2
    """

    name: str
    values: tuple
    active_if: tuple[str, int] | None = None

    def __post_init__(self) -> None:
        values = tuple(self.values)
        object.__setattr__(self, "values", values)
        if not values:
            raise UserError(f"{self.name}: give at least one value")
        if len(set(map(repr, values))) != len(values):
            raise UserError(f"{self.name}: values {list(values)} contain duplicates")

    @property
    def cardinality(self) -> int:
        return len(self.values)

    def canonical(self, value: Any) -> Any:
        return _canonical(self.values, value, self.name)

    def suggest(self, trial: Any) -> Any:
        return trial.suggest_categorical(self.name, list(self.values))

    def to_tune(self) -> Any:
        from ray import tune

        return tune.choice(list(self.values))

    def sample(self, rng: np.random.Generator) -> Any:
        return self.values[int(rng.integers(len(self.values)))]

    def encode(self, value: Any) -> float:
        """Numbers (and bools) encode as themselves, anything else as its position in ``values``."""
        if isinstance(value, (int, float)):
            return float(value)
        return float(self.values.index(value))


@dataclass(frozen=True)
class IntRange:
    """An integer in ``[low, high]``, both ends inclusive.

    Example:
        >>> IntRange("stage2.depth", 4, 16).cardinality
        13
    """

    name: str
    low: int
    high: int
    active_if: tuple[str, int] | None = None

    def __post_init__(self) -> None:
        for bound in (self.low, self.high):
            if isinstance(bound, bool) or not isinstance(bound, int):
                raise UserError(f"{self.name}: range bounds must be integers, got {bound!r}")
        if self.low > self.high:
            raise UserError(f"{self.name}: low = {self.low} is above high = {self.high}")

    @property
    def values(self) -> tuple[int, ...]:
        return tuple(range(self.low, self.high + 1))

    @property
    def cardinality(self) -> int:
        return self.high - self.low + 1

    def canonical(self, value: Any) -> int:
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, int) or not self.low <= value <= self.high:
            raise UserError(f"{self.name} = {value!r} is not in this search space; "
                            f"allowed: integers {self.low} to {self.high} (inclusive)")
        return value

    def suggest(self, trial: Any) -> int:
        return trial.suggest_int(self.name, self.low, self.high)

    def to_tune(self) -> Any:
        from ray import tune

        return tune.randint(self.low, self.high + 1)  # Tune excludes the upper bound

    def sample(self, rng: np.random.Generator) -> int:
        return int(rng.integers(self.low, self.high + 1))

    def encode(self, value: int) -> float:
        return float(value)


Param = Union[Choice, IntRange]
