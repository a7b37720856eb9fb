"""How well an estimator ranks candidates, judged against trained reference accuracies (the oracle).

Every function takes two mappings from architecture id to a score (higher = better) and uses the ids
both hold with finite values. A search keeps the estimator's top-1, so besides Kendall tau the figures
that matter are what trusting that top-1 costs (regret) and whether the truly best is among the few
the estimator would promote (top-k hit).
"""
from __future__ import annotations

import math
from typing import Hashable, Mapping

__all__ = ["kendall_tau", "regret", "top_k_hit", "common_finite"]

Scores = Mapping[Hashable, float]


def common_finite(estimate: Scores, truth: Scores) -> list[Hashable]:
    """Ids that both mappings score with finite values, sorted by their text (a stable order)."""
    return sorted((k for k in estimate.keys() & truth.keys()
                   if math.isfinite(estimate[k]) and math.isfinite(truth[k])), key=str)


def kendall_tau(estimate: Scores, truth: Scores) -> tuple[float, int]:
    """Kendall tau-b of ``estimate`` against ``truth`` and the number of ids used (NaN below 3)."""
    from scipy.stats import kendalltau

    ids = common_finite(estimate, truth)
    if len(ids) < 3:
        return float("nan"), len(ids)
    tau = kendalltau([estimate[k] for k in ids], [truth[k] for k in ids]).statistic
    return float(tau), len(ids)


def _ranked(scores: Scores, ids: list[Hashable]) -> list[Hashable]:
    # Highest first; ties keep the stable id order, so the result never depends on dict order.
    return sorted(ids, key=lambda k: -scores[k])


def regret(estimate: Scores, truth: Scores) -> float:
    """Truth of the best id minus truth of the estimator's top-1 (points lost by trusting it); NaN if empty."""
    ids = common_finite(estimate, truth)
    if not ids:
        return float("nan")
    return max(truth[k] for k in ids) - truth[_ranked(estimate, ids)[0]]


def top_k_hit(estimate: Scores, truth: Scores, k: int = 3) -> bool | None:
    """Whether the truly best id is among the estimator's top ``k`` (None when nothing is comparable)."""
    ids = common_finite(estimate, truth)
    if not ids:
        return None
    return _ranked(truth, ids)[0] in _ranked(estimate, ids)[:k]
