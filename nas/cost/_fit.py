"""``shrink_to_fit``: a hand-made architecture narrowed uniformly until it meets a budget (a fair baseline)."""
from __future__ import annotations

from typing import Any, Callable

__all__ = ["shrink_to_fit"]


def shrink_to_fit(config: Any, fits: Callable[[Any], bool], *, step: float = 0.005) -> Any | None:
    """``config`` with every width times the largest multiplier (a multiple of ``step``) for which ``fits``.

    Widths stay multiples of their stage's head counts (the family's ``scale_width``), so the cost falls in
    steps as the multiplier does and never rises: a bisection finds the multiplier. ``config`` itself when it
    fits already; None when even the narrowest widths do not.
    """
    if fits(config):
        return config
    low, high = 0, round(1 / step)  # multipliers low*step (fits, or 0) .. high*step (does not fit)
    while high - low > 1:
        mid = (low + high) // 2
        if fits(config.scale_width(mid * step)):
            low = mid
        else:
            high = mid
    return config.scale_width(low * step) if low else None
