"""Multi-fidelity promotion: successive halving by non-dominated rank, decided from the study's own trials.

Every candidate trains at the first rung (``--trials`` of them). Once that rung is closed (sampling over, no
first-rung training in flight), the best ``1/--reduction`` of its within-budget architectures continue to the
next rung, each from its own checkpoint (``nas.proxy.train_rung``); when that rung is closed, the best of it
continue again, up to the top rung. A screening estimator (the supernet) goes from its first rung straight to
the top: its best ``--confirm`` architectures train there standalone (``PromotionSettings.ladder``).
Synchronous halving rather than ASHA's asynchronous rule: with the
small trial counts of a CPU search, ASHA promotes whatever led among the first few candidates, and the
compute would depend on arrival order; here it is known up front (``PromotionSettings.compute``).

"Best" is the order MO-ASHA uses: non-dominated rank on the search's objectives (accuracy at that rung and
the cost objectives), then accuracy within a rank, so a cheap architecture on the first front is promoted
before a costlier, slightly more accurate one on the second, and cheap candidates are not starved.

A promotion is a trial of its own (the same parameters, ``rung`` > 0, ``root`` = the architecture's first-rung
trial, ``promoted_from`` = the trial it continues): a finished trial cannot take new values, and this way every
rung's accuracy stays in the study, the dashboards list each rung, and a killed promotion is settled and queued
again like any trial. The decision reads only stored trials, so every worker process (and Ray's driver)
reaches the same one under the run's claim lock.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from ..metrics import METRICS
from ._config import SearchConfig
from ._trials import count_trials, stop_reason

if TYPE_CHECKING:
    import optuna

__all__ = ["Promotion", "Step", "next_step", "deadlines", "next_promotion", "promotion_order", "rung_of", "root_of"]


def rung_of(trial: Any) -> int:
    """The rung a trial trained at (0 for the first, and for trials of runs without promotion)."""
    return int(trial.user_attrs.get("rung", 0))


def root_of(trial: Any) -> int:
    """The number of the architecture's first-rung trial."""
    return int(trial.user_attrs.get("root", trial.number))


@dataclass(frozen=True)
class Promotion:
    """Train the architecture of ``source`` (its trial at the rung below) at ``rung``."""

    source: Any  # optuna FrozenTrial
    rung: int

    def user_attrs(self) -> dict[str, int]:
        """The :data:`~nas.search._records.PROMOTION_KEYS` of the promotion trial."""
        return {"rung": self.rung, "root": root_of(self.source), "promoted_from": self.source.number}


@dataclass(frozen=True)
class Step:
    """What a free worker does next: ``sample`` a candidate, ``promote`` (enqueue ``promotion``, then ask),
    ``resume`` (ask: a promotion is queued already), ``wait`` or ``stop`` (``reason``)."""

    action: str
    reason: str | None = None
    promotion: Promotion | None = None


def promotion_order(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of ``points`` (larger is better in every coordinate, accuracy first) in promotion order:
    non-dominated rank, then accuracy, then index.

    Example:
        >>> promotion_order([(50.0, -4.0), (52.0, -3.9), (45.0, -1.0), (49.0, -3.0)])
        [1, 2, 3, 0]
    """
    remaining = list(range(len(points)))
    order: list[int] = []
    while remaining:
        front = [i for i in remaining
                 if not any(_dominates(points[j], points[i]) for j in remaining if j != i)]
        order += sorted(front, key=lambda i: (-points[i][0], i))
        remaining = [i for i in remaining if i not in front]
    return order


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def _point(trial: Any, objectives: Sequence[str]) -> list[float]:
    """The trial's objective values, larger is better, accuracy (at its own rung) first."""
    attrs = trial.user_attrs
    return [METRICS[o].sign * float(attrs.get(METRICS[o].column, float("nan"))) for o in objectives]


def _trained(trial: Any) -> bool:
    return (trial.state.name == "COMPLETE" and trial.user_attrs.get("status") == "trained"
            and all(v <= 0 for v in trial.constraints.values()))


def _in_flight(trial: Any) -> bool:
    return trial.state.name in ("RUNNING", "WAITING")


def _claims(trial: Any) -> bool:
    """A trial at a higher rung that uses up a promotion: in flight or finished, but not interrupted (an
    interrupted one is queued again and its copy claims instead)."""
    return _in_flight(trial) or trial.user_attrs.get("status") != "interrupted"


def next_promotion(config: SearchConfig, trials: Sequence[Any]) -> Promotion | str | None:
    """The promotion to start now, ``"wait"`` while a rung is still open, or None when every rung is done.

    Call once sampling is over (no new first-rung candidate will start).
    """
    objectives = config.space.objective_names
    top = len(config.promotion.rungs) - 1
    completed: list[dict[int, Any]] = [{} for _ in range(top + 1)]  # rung -> root -> trial
    claimed: list[set[int]] = [set() for _ in range(top + 1)]
    open_: list[bool] = [False] * (top + 1)
    seen: list[set[str]] = [set() for _ in range(top + 1)]
    for t in sorted(trials, key=lambda t: t.number):
        r = min(rung_of(t), top)
        if _in_flight(t):
            open_[r] = True
        if r > 0 and _claims(t):
            claimed[r].add(root_of(t))
        arch = t.user_attrs.get("arch_id")
        if _trained(t) and arch not in seen[r]:  # one per architecture (two workers may race to one)
            seen[r].add(arch)
            completed[r][root_of(t)] = t
    ladder = config.promotion.ladder
    for lo, hi in zip(ladder, ladder[1:]):
        if open_[lo]:
            return "wait"
        cohort = completed[lo]
        if len(claimed[hi]) < config.promotion.quota(len(cohort)):
            roots = list(cohort)
            for i in promotion_order([_point(cohort[root], objectives) for root in roots]):
                if roots[i] not in claimed[hi]:
                    return Promotion(cohort[roots[i]], hi)
        # Every architecture of the cohort that could be promoted is (a re-run search may have more
        # claims than its quota); the next rung decides once its own trainings are done.
    return "wait" if open_[top] else None


def next_step(config: SearchConfig, trials: Sequence["optuna.trial.FrozenTrial"], deadline: float | None,
              sampling_deadline: float | None) -> Step:
    """What a free worker should do, from the stored trials (call under the run's claim lock).

    Args:
        deadline: ``time.time()`` after which nothing new starts (``--timeout``).
        sampling_deadline: after which no new candidate starts (the first rung's share of the timeout).
    """
    if deadline is not None and time.time() >= deadline:
        return Step("stop", "timeout reached")
    counts = count_trials(trials)
    reason = stop_reason(config, counts, sampling_deadline)
    if reason is None:
        return Step("sample")
    if reason == "wait":  # first-rung slots may still be taken by trainings in flight
        return Step("wait")
    if not config.promotion.promotes:
        return Step("stop", reason)
    if any(t.state.name == "WAITING" and rung_of(t) > 0 for t in trials):
        return Step("resume")  # a promotion queued again after a kill: asking takes it first
    promotion = next_promotion(config, trials)
    if isinstance(promotion, Promotion):
        return Step("promote", promotion=promotion)
    if promotion == "wait":
        return Step("wait")
    promotion = config.promotion
    trained = counts["per_rung"] + [0] * len(promotion.rungs)
    per_rung = " + ".join(str(trained[r]) for r in promotion.ladder[1:]) or "0"
    if promotion.screening:
        return Step("stop", f"{reason}; {per_rung} confirmed at the top rung ({promotion.rungs[-1]}x)")
    return Step("stop", f"{reason}; {per_rung} promoted (rungs {'/'.join(f'{m}x' for m in promotion.rungs)})")


def deadlines(config: SearchConfig, start: float | None = None) -> tuple[float | None, float | None]:
    """``time.time()`` values after which nothing starts, and after which no new candidate starts: the timeout,
    and the first rung's share of it (None, None without a timeout)."""
    timeout = config.sampling.timeout
    if not timeout:
        return None, None
    start = time.time() if start is None else start
    return start + timeout, start + timeout * config.promotion.first_share
