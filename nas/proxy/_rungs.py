"""Rungs: a proxy budget multiplied step by step, each rung continuing the previous one's training.

A multi-fidelity search (successive halving) trains every candidate at the first rung and continues only the
promising ones; the oracle benchmark measures how well each rung ranks. Rung ``r`` has ``multiples[r]`` times
the base proxy's image passes in all; going up a rung trains on from the last rung's weights and optimizer
state for the difference, under a fresh short warm-up and cosine, so every rung ends annealed and its accuracy
is comparable across candidates. With ``growth="data"`` a rung also trains on ``multiples[r]`` times as many
images (class-balanced subsets of one seed nest, so it sees the old images and new ones); with ``"epochs"``
it repeats the base subset. Either way it is evaluated on ``multiples[r]`` times the validation images, so
evaluation noise shrinks as the stakes rise.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvt import UserError

from ..data import Dataset
from ._config import ProxyConfig
from ._train import ProxyResult, ReportFn, train_proxy

__all__ = ["RungSchedule", "GROWTHS", "train_rung"]

GROWTHS = ("data", "epochs")
CONTINUATION_WARMUP = 0.1  # share of a continuation's steps spent re-warming (AdamW moments carry over)


@dataclass(frozen=True)
class RungSchedule:
    """Budget multiples of the base proxy, lowest first (``multiples[0]`` is the base itself, 1).

    Example:
        >>> RungSchedule((1, 2, 4)).settings(ProxyConfig(), 1).train_subset
        6000
    """

    multiples: tuple[int, ...] = (1, 2, 4)
    growth: str = "data"

    def __post_init__(self) -> None:
        m = tuple(self.multiples)
        object.__setattr__(self, "multiples", m)
        if (not m or m[0] != 1 or any(not isinstance(k, int) or isinstance(k, bool) for k in m)
                or any(b <= a for a, b in zip(m, m[1:]))):
            raise UserError(f"rung multiples {list(m)}: give increasing integers starting at 1, e.g. 1 2 4")
        if self.growth not in GROWTHS:
            raise UserError(f"rung growth {self.growth!r}: use one of {', '.join(GROWTHS)}")

    def settings(self, base: ProxyConfig, rung: int) -> ProxyConfig:
        """The settings of rung ``rung``'s own training (the continuation from rung ``rung - 1``)."""
        if not 0 <= rung < len(self.multiples):
            raise UserError(f"rung {rung}: this schedule has rungs 0 to {len(self.multiples) - 1}")
        if rung == 0:
            return base
        m, added = self.multiples[rung], self.multiples[rung] - self.multiples[rung - 1]
        val = None if base.val_subset is None else base.val_subset * m
        if self.growth == "epochs" or base.train_subset is None:  # the whole set cannot grow
            changes: dict[str, Any] = {"epochs": base.epochs * added, "steps": base.steps and base.steps * added}
            warmup = CONTINUATION_WARMUP * base.epochs * added
        else:
            images = base.train_subset * m
            steps = (base.steps or base.epochs * max(1, base.train_subset // base.batch_size)) * added
            steps_per_epoch = max(1, images // base.batch_size)
            changes = {"train_subset": images, "steps": steps}
            warmup = CONTINUATION_WARMUP * steps / steps_per_epoch
        return base.replace(val_subset=val, warmup_epochs=warmup, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {"multiples": list(self.multiples), "growth": self.growth}


def train_rung(model_config: Any, dataset: Dataset, base: ProxyConfig, schedule: RungSchedule, rung: int,
               directory: Path, *, report: ReportFn | None = None) -> ProxyResult:
    """Train one candidate at ``rung``, keeping its rungs' checkpoints in ``directory`` (one per candidate).

    Rung 0 trains from scratch; a higher rung continues from ``directory/rung-{rung-1}.pt``, training that
    lower rung first when its checkpoint is missing (seeded: on the same machine and threads it gives what it
    gave before). A rung already finished returns its result without training; one interrupted resumes after
    its last finished epoch. ``report`` sees this rung's epochs only.
    """
    start_from, own = None, directory / f"rung-{rung}.pt"
    if rung > 0:
        start_from = directory / f"rung-{rung - 1}.pt"
        if not start_from.exists() and not own.exists():  # a started rung resumes from its own checkpoint
            train_rung(model_config, dataset, base, schedule, rung - 1, directory)
    return train_proxy(model_config, dataset, schedule.settings(base, rung), report=report, checkpoint=own,
                       start_from=start_from)
