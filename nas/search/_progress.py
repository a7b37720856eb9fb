"""Live progress of a search, read from the study storage (so it sees every worker process).

On a terminal: a tqdm bar over proxy trainings with feasible / failed counts, best accuracy, Pareto
size and time left. Elsewhere (logs, CI): one line whenever a trial finishes.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Any, Callable

from ._config import SearchConfig
from ._trials import count_trials
from ._records import highest_rungs, pareto_rows, trial_row

__all__ = ["Progress", "summarize"]

_log = logging.getLogger("nas.search")

_MIN_INTERVAL_S = 0.5  # reading the journal more often than this only costs time


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def summarize(trials: list[Any], config: SearchConfig, front: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Counts, feasible fraction, best accuracy and Pareto size of a list of Optuna trials (``front``: their
    Pareto rows, when the caller has them already)."""
    counts = count_trials(trials)
    rows = [trial_row(t) for t in trials if t.user_attrs.get("status") == "trained" and t.state.name == "COMPLETE"]
    front = pareto_rows(rows, config.space.objective_names) if front is None else front
    best = max((r["accuracy"] for r in highest_rungs(rows)), default=None)
    fraction = counts["feasible"] / counts["costed"] if counts["costed"] else None
    return {**counts, "best_accuracy": best, "pareto": len(front), "feasible_fraction": fraction,
            "screening": config.promotion.screening}


class Progress:
    """Refreshable display; ``refresh()`` is cheap to call often (it rate-limits itself).

    Args:
        config: the search (target trial count, timeout, objectives).
        load_trials: returns the study's current trials.
        already: proxy trainings finished before this session (resume), for the time estimate.
    """

    def __init__(self, config: SearchConfig, load_trials: Callable[[], list[Any]], already: int = 0):
        self.config = config
        self._load = load_trials
        self._start = time.monotonic()
        self._already = already
        self._last = 0.0
        self._seen: set[int] = set()
        self._logged: tuple[int, int] | None = None  # trainings and promotions of the last log line (no terminal)
        self._bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            trials = config.sampling.trials
            self._bar = tqdm(total=trials, initial=min(already, trials), unit="training",
                             dynamic_ncols=True, file=sys.stderr)

    def remaining(self, s: dict[str, Any]) -> float | None:
        """Seconds left: the pace of this session's trainings (in first-rung units, promotions included),
        capped by the timeout."""
        promotion = self.config.promotion
        elapsed = time.monotonic() - self._start
        done = promotion.units([s["trainings"], *s["per_rung"][1:]])
        fresh = done - promotion.units([self._already])
        left = None
        if fresh > 0:
            left = elapsed / fresh * max(0, promotion.compute(self.config.sampling.trials) - done)
        if self.config.sampling.timeout is not None:
            cap = max(0.0, self.config.sampling.timeout - elapsed)
            left = cap if left is None else min(left, cap)
        return left

    def status_line(self, s: dict[str, Any]) -> str:
        best = "-" if s["best_accuracy"] is None else f"{s['best_accuracy']:.2f}%"
        frac = "-" if s["feasible_fraction"] is None else f"{100 * s['feasible_fraction']:.0f}%"
        promoted = ""
        promotion = self.config.promotion
        if promotion.promotes:
            quotas = promotion.quotas(self.config.sampling.trials)[1:]
            per_rung = s["per_rung"] + [0] * len(promotion.rungs)
            done = [per_rung[r] for r in promotion.ladder[1:]]
            label = "confirmed" if promotion.screening else "promoted"
            promoted = f"{label} {' + '.join(f'{d}/{q}' for d, q in zip(done, quotas))} | "
        first = "scored" if promotion.screening else "trained"
        return (f"{first} {s['trained']}/{self.config.sampling.trials} | {promoted}feasible "
                f"{s['feasible']}/{s['costed']} ({frac}) | "
                f"failed {s['failed']} | best {best} | pareto {s['pareto']} | "
                f"elapsed {_fmt_time(time.monotonic() - self._start)} | "
                f"left ~{_fmt_time(self.remaining(s))}")

    def refresh(self, force: bool = False) -> dict[str, Any] | None:
        now = time.monotonic()
        if not force and now - self._last < _MIN_INTERVAL_S:
            return None
        self._last = now
        trials = self._load()
        s = summarize(trials, self.config)
        new = [t for t in trials if t.state.name in ("COMPLETE", "FAIL") and t.number not in self._seen]
        for t in new:
            self._seen.add(t.number)
            attrs = t.user_attrs
            if attrs.get("status") == "failed":
                self._write(f"trial {t.number} failed: {attrs.get('failure')}")
        if self._bar is not None:
            self._bar.n = min(s["trainings"], self.config.sampling.trials)
            self._bar.set_postfix_str(self.status_line(s).split(" | ", 1)[1], refresh=True)
        elif (s["trainings"], s["promotions"]) != self._logged:
            self._logged = (s["trainings"], s["promotions"])
            _log.info("%s", self.status_line(s))
        return s

    def _write(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            _log.warning("%s", text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def mark_seen(self, trials: list[Any]) -> None:
        """Trials of earlier sessions are not announced again."""
        self._seen.update(t.number for t in trials if t.state.name in ("COMPLETE", "FAIL"))
