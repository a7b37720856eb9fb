"""``python -m nas.search``: constrained multi-objective architecture search with Optuna.

Every candidate is costed first (analytic MACs and params, measured or predicted latency); one over any
budget is recorded as infeasible (``trial.set_constraint``) and never trained. Candidates within budget
are proxy-trained, in parallel worker processes sharing the study's journal. The run directory gets
``trials.csv``, ``pareto.csv``, plots and reference-format exports of the Pareto front::

    python -m nas.search --budget 4GFLOPs
    python -m nas.search --config experiments/search/cvt13-nas-4gflops.yaml --workers 2

From Python::

    from nas.search import SearchConfig, run_search
    result = run_search(SearchConfig.create(space="cvt13-nas", budget="4GFLOPs", trials=8))
    print(result.best)
"""
from __future__ import annotations

import logging
import shlex
import signal
import sys
import warnings
from typing import Sequence

from ._config import SAMPLERS, SearchConfig
from ._export import FORMATS, export_run, export_trials, load_run, select_trials
from ._records import pareto_rows, read_trials_csv
from ._run import SearchResult, run_search

__all__ = ["main", "SearchConfig", "SAMPLERS", "SearchResult", "run_search", "export_run", "export_trials",
           "select_trials", "load_run", "read_trials_csv", "pareto_rows", "FORMATS"]


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now (tests and notebooks replace it between calls)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


_HANDLER = _StderrHandler()
_HANDLER.setFormatter(logging.Formatter("%(message)s"))


def _setup_logging() -> None:
    import optuna

    for name in ("nas", "search_spaces"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        if _HANDLER not in logger.handlers:
            logger.addHandler(_HANDLER)
        logger.propagate = False
    logging.getLogger("timm").setLevel(logging.ERROR)  # scheduler notes on tiny proxy budgets
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Clip non-finite values")  # GPSampler on inf placeholders


def _report(result: SearchResult) -> str:
    s = result.summary
    frac = "-" if s["feasible_fraction"] is None else f"{100 * s['feasible_fraction']:.0f}%"
    counts = [f"{s['trained']} {'scored' if s['screening'] else 'trained'}", f"{s['failed']} failed",
              f"{s['costed'] - s['feasible']} over budget"]
    if s["promotions"]:
        counts.insert(1, f"{s['promotions']} confirmed at the top rung" if s["screening"] else
                      f"{' + '.join(map(str, s['per_rung'][1:]))} promoted to higher rungs")
    if s["duplicates"]:
        counts.append(f"{s['duplicates']} repeating an architecture already {'scored' if s['screening'] else 'trained'}"
                      f" (its result reused)")
    lines = [f"stopped: {result.stop_reason}",
             f"trials: {', '.join(counts)}; feasible fraction {frac} ({s['feasible']} of {s['costed']} sampled "
             f"architectures within budget)"]
    if result.best is not None:
        b = result.best
        lat = f", {b['latency_ms']:.2f} ms" if b.get("latency_ms") is not None else ""
        rung = f" at rung {b['rung']} ({b['rung_budget']}x the proxy budget)" if b.get("rung") else ""
        lines.append(f"best: trial {b['number']} ({b['arch_id']}): {b['accuracy']:.2f}% proxy top-1{rung}, "
                     f"{b['macs'] / 1e9:.3f} GMACs, {b['params'] / 1e6:.2f}M params{lat}")
        lines.append(f"pareto front: {len(result.pareto)} architecture(s) -> {result.run_dir / 'pareto.csv'}")
    for path in result.exports:
        lines.append(f"exported: {path}")
    if result.self_check is not None:
        lines.append(f"self-check (seed {result.self_check['seed']}): {result.self_check['verdict']['text']}")
    lines.append(f"results: {result.run_dir}  (python -m nas.export {shlex.quote(str(result.run_dir))} --top 3)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (console script ``cvt-nas-search``); returns the exit code.

    Bad input is one line on stderr and exit code 2; Ctrl-C or ``kill`` exit 130 with the outputs written.
    """
    from ..cli import run_main

    return run_main(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    from ._options import parse_config

    config = parse_config(argv)
    _setup_logging()
    # `kill PID` stops a search like Ctrl-C does: the running trial is recorded as interrupted and queued
    # again, and the outputs are written (kill -9 is handled by --resume instead).
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        result = run_search(config)
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(_report(result))
    if result.best is None:
        print("error: no candidate was trained successfully; see the failure column of "
              f"{result.run_dir / 'trials.csv'}", file=sys.stderr)
        return 1
    return 0
