"""How far an estimator's pick can be trusted, judged against the oracle where the search decides.

Per estimator: Kendall tau against the oracle within the band, the oracle accuracy lost by trusting the
estimator's top-1 (regret, points), whether the oracle's best is in the estimator's top 3, and what one
estimate costs. Beside them: what chance gives (random order), and the noise ceiling (the oracle's own
second seed used as an estimator of its first).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Mapping

from ._metrics import common_finite, kendall_tau, regret, top_k_hit
from ._oracle import OracleStore
from ._store import ResultStore

__all__ = ["EstimateStore", "Fidelity", "fidelity", "random_fidelity", "noise_ceiling", "oracle_truth",
           "fidelity_table"]


class EstimateStore(ResultStore):
    """Estimator values of the oracle's architectures: ``results[arch_id][estimator]`` -> value, seconds."""

    FORMAT = "cvt-nas estimates"
    WHAT = "estimates"

    def values(self, estimator: str) -> dict[str, float]:
        """arch_id -> the estimator's value, for the architectures it has measured."""
        return {a: float(subs[estimator]["value"]) for a, subs in self.results.items() if estimator in subs}

    def seconds(self, estimator: str) -> float:
        """Median seconds per candidate (NaN when none)."""
        times = [subs[estimator]["seconds"] for subs in self.results.values() if estimator in subs]
        return statistics.median(times) if times else math.nan


@dataclass(frozen=True)
class Fidelity:
    """One estimator's ranking quality against the oracle (``top3``: hit as 1/0, or a probability)."""

    name: str
    tau: float
    n: int
    regret: float
    top3: float
    seconds: float = math.nan


def oracle_truth(store: OracleStore, arch_ids: list[str]) -> dict[str, float]:
    """Each architecture's oracle accuracy: the mean over the seeds it was trained under (NaN if none)."""
    out = {}
    for a in arch_ids:
        accs = [store.accuracy(a, s) for s in store.seeds(a)]
        accs = [x for x in accs if math.isfinite(x)]
        out[a] = statistics.fmean(accs) if accs else math.nan
    return out


def fidelity(name: str, estimate: Mapping[str, float], truth: Mapping[str, float],
             seconds: float = math.nan) -> Fidelity:
    """The figures of one estimator."""
    tau, n = kendall_tau(estimate, truth)
    hit = top_k_hit(estimate, truth, k=3)
    return Fidelity(name, tau, n, regret(estimate, truth), math.nan if hit is None else float(hit), seconds)


def random_fidelity(truth: Mapping[str, float]) -> Fidelity:
    """What a random order gives in expectation: tau 0, the mean shortfall, top-3 with probability 3/n."""
    values = [truth[a] for a in common_finite(truth, truth)]
    if not values:
        return Fidelity("random", math.nan, 0, math.nan, math.nan, 0.0)
    return Fidelity("random", 0.0, len(values), max(values) - statistics.fmean(values), min(1.0, 3 / len(values)),
                    0.0)


def noise_ceiling(store: OracleStore, arch_ids: list[str], seed: int = 1) -> Fidelity:
    """The oracle's ``seed`` as an estimator of its seed 0, over the architectures trained under both."""
    both = [a for a in arch_ids if seed in store.seeds(a) and 0 in store.seeds(a)]
    first = {a: store.accuracy(a, 0) for a in both}
    other = {a: store.accuracy(a, seed) for a in both}
    return fidelity(f"oracle seed {seed} (noise ceiling)", other, first)


def fidelity_table(rows: list[Fidelity], title: str) -> str:
    """The rows as a Markdown table under ``title`` (what the fidelity benchmarks print)."""
    lines = [title, "| estimator | Kendall tau in band | n | regret (points) | oracle best in top 3 | seconds per "
                    "candidate |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        top3 = "" if math.isnan(r.top3) else ("yes" if r.top3 == 1 else "no" if r.top3 == 0 else f"p = {r.top3:.2f}")
        lines.append(f"| {r.name} | {r.tau:+.2f} | {r.n} | {r.regret:.2f} | {top3} | {r.seconds:.3g} |")
    return "\n".join(lines)
