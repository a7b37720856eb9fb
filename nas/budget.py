"""Cost budgets: ``4GFLOPs``, ``20M params``, ``2.5ms`` -> a validated :class:`Budget`.

**FLOPs means multiply-accumulates here**, as in the CvT paper (its "4.53 GFLOPs" for CvT-13 counts one
fused multiply-add as one operation): ``4GFLOPs``, ``4G``, ``4GMACs`` are the same budget. Tools that
count a multiply and an add separately report twice the number.

Accepted (case-insensitive, spaces allowed between the parts)::

    4GFLOPs  4.1G  800MFLOPs  4.1GMACs  1.5e9 MACs   -> kind "macs"     (prefixes k, M, G, T)
    20M params  20Mparams  300k params                -> kind "params"
    2.5ms  400us  400µs  0.01s  900ns                 -> kind "latency"  (stored in seconds)

A bare count (``20M``) is MACs unless ``kind="params"`` is given (e.g. by a ``--max-params`` option).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal

from cvt import UserError

__all__ = ["Budget", "parse_budget", "KINDS"]

KINDS = ("macs", "params", "latency")
# Powers of ten, applied in decimal so "4.1G" is exactly 4.1e9.
_PREFIXES = {"": 0, "k": 3, "m": 6, "g": 9, "t": 12}
_TIME_UNITS = {"s": 0, "ms": -3, "us": -6, "µs": -6, "μs": -6, "ns": -9}
_COUNT_UNITS = {"": None, "flop": "macs", "flops": "macs", "mac": "macs", "macs": "macs",
                "param": "params", "params": "params", "parameters": "params"}
_NUMBER = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)\s*(.*?)\s*$", re.IGNORECASE)
_EXAMPLES = "e.g. 4GFLOPs, 4.1G, 800MFLOPs, 4.1GMACs, 20M params, 2.5ms, 400us"


@dataclass(frozen=True)
class Budget:
    """An upper bound on one cost: ``kind`` is ``"macs"`` or ``"params"`` (counts) or ``"latency"``
    (seconds).

    Example:
        >>> b = parse_budget("4.1GFLOPs")
        >>> b.kind, b.value, str(b)
        ('macs', 4100000000.0, '4.10 GMACs')
        >>> b.allows(3.9e9)
        True
    """

    kind: str
    value: float

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UserError(f"budget kind {self.kind!r} is unknown; use one of {', '.join(KINDS)}")
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float)) \
                or not math.isfinite(self.value) or self.value <= 0:
            raise UserError(f"a {self.kind} budget must be a positive finite number, got {self.value!r}")
        object.__setattr__(self, "value", float(self.value))

    def allows(self, cost: float) -> bool:
        """Whether ``cost`` (same unit: count, or seconds) is within the budget (inclusive)."""
        return cost <= self.value

    def __str__(self) -> str:
        if self.kind == "macs":  # CCT-sized budgets are millions: keep three significant figures
            return f"{self.value / 1e9:.2f} GMACs" if self.value >= 1e8 else f"{self.value / 1e6:.3g} MMACs"
        if self.kind == "params":
            return f"{self.value / 1e6:.1f}M params"
        return f"{self.value * 1e3:.2f} ms"


def parse_budget(text: str, kind: str | None = None) -> Budget:
    """Parse a budget such as ``"4GFLOPs"`` (FLOPs = multiply-accumulates), ``"20M params"`` or ``"2.5ms"``.

    Args:
        text: the budget; case-insensitive.
        kind: force ``"macs"``, ``"params"`` or ``"latency"``; a bare count (``"20M"``) then takes
            this kind, and a unit of another kind is an error.

    Raises:
        UserError: empty, not a number, not positive, an unknown unit, or a unit of another ``kind``.
    """
    if kind is not None and kind not in KINDS:
        raise UserError(f"budget kind {kind!r} is unknown; use one of {', '.join(KINDS)}")
    if not isinstance(text, str) or not text.strip():
        raise UserError(f"empty budget; give a number with a unit, {_EXAMPLES}")
    match = _NUMBER.match(text)
    if match is None:
        raise UserError(f"budget {text!r} does not start with a number; {_EXAMPLES}")
    number = Decimal(match.group(1))
    unit = match.group(2).lower()
    if number <= 0:
        raise UserError(f"budget {text!r} must be positive")
    if unit in _TIME_UNITS:
        found, exponent = "latency", _TIME_UNITS[unit]
    else:
        # "macs" and "ms" start with a prefix letter too: whole units first, then prefix + unit.
        prefix, rest = ("", unit) if unit in _COUNT_UNITS or unit[:1] not in _PREFIXES else (unit[:1], unit[1:])
        rest = rest.strip()
        if rest not in _COUNT_UNITS:
            raise UserError(f"budget {text!r} has an unknown unit {match.group(2)!r}; {_EXAMPLES}")
        found, exponent = _COUNT_UNITS[rest] or kind or "macs", _PREFIXES[prefix]
        if found == "latency":  # kind="latency" with a bare count such as "20M"
            raise UserError(f"budget {text!r} is a count, but a latency is expected; e.g. 2.5ms or 400us")
    if kind is not None and found != kind:
        raise UserError(f"budget {text!r} is a {found} budget, but a {kind} budget is expected")
    return Budget(found, float(number.scaleb(exponent)))
