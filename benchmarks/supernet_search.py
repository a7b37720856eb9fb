"""Searching a budget on a cached supernet: how long it takes, how many candidates it scores, and what it picks,
beside the default proxy search of the same budget run in the same process.

Runs ``python -m nas.search --estimator supernet`` (in-process, one worker) at ``--budget`` with ``--trials``
scores and ``--confirm`` confirmations, and reads the phases from the study: the wall and CPU time of the scoring
(every candidate's inherited accuracy) and of the confirmations (standalone trainings at the top rung), candidates
scored per CPU-minute, and whether the supernet had to be trained first (it should not: a second budget inside a
cached range reuses it). With ``--baseline`` it then runs the default search (proxy training with promotion) at the
same budget and seed, so both picks are compared at the same fidelity: each search's best at the top rung.

    python benchmarks/supernet_search.py --budget 3GFLOPs --out experiments/results/supernet/search-3gflops.json \\
        --baseline
    python benchmarks/supernet_search.py --budget 4.5MFLOPs --space tests/data/tiny-cvt-space.yaml --data synthetic \\
        --trials 10 --quick --out s.json      # smoke run
"""
from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import nas  # noqa: F401  (first of all: OpenMP's policy before torch loads, then the torchvision fix)
from nas.cli import ArgumentParser, run_main
from nas.devices import cpu_model
from nas.search import SearchConfig, load_run, run_search

QUICK = {"proxy": {"epochs": 1, "train_subset": 64, "val_subset": 32, "batch_size": 32}, "rungs": "1,2"}


class _CpuClock(threading.Thread):
    """Samples (wall, process CPU) once a second, so a phase's CPU time can be read off its wall-clock bounds."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.time(), time.process_time()))
            self.stop.wait(1.0)

    def cpu_between(self, start: float, end: float) -> float:
        def at(t: float) -> float:
            before = [c for w, c in self.samples if w <= t]
            return before[-1] if before else self.samples[0][1]

        return at(end) - at(start)


def _phase(trials: list[Any], clock: _CpuClock) -> dict[str, Any] | None:
    if not trials:
        return None
    start = min(t.datetime_start.timestamp() for t in trials)
    end = max(t.datetime_complete.timestamp() for t in trials)
    return {"n": len(trials), "wall_s": round(end - start, 1), "cpu_s": round(clock.cpu_between(start, end), 1)}


def _search(settings: dict[str, Any], out: Path) -> dict[str, Any]:
    clock = _CpuClock()
    clock.start()
    start = time.time()
    try:
        result = run_search(SearchConfig.create(**settings, out=str(out)))
    finally:
        clock.stop.set()
    wall = time.time() - start
    trials = [t for t in load_run(out)[2].get_trials(deepcopy=False) if t.state.name == "COMPLETE"
              and t.user_attrs.get("status") == "trained"]
    scored = [t for t in trials if t.user_attrs.get("screening")]
    trained = [t for t in trials if not t.user_attrs.get("screening")]
    best = result.best
    return {"wall_s": round(wall, 1), "cpu_s": round(clock.samples[-1][1] - clock.samples[0][1], 1),
            "stop_reason": result.stop_reason, "scoring": _phase(scored, clock), "training": _phase(trained, clock),
            "best": None if best is None else {k: best[k] for k in ("number", "arch_id", "accuracy", "rung", "macs")},
            "supernet": json.loads((out / "run.json").read_text()).get("estimator", {})}


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="benchmarks/supernet_search.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", default="3GFLOPs", help="the MACs budget (default 3GFLOPs)")
    parser.add_argument("--space", default="cvt", help="search space (default cvt)")
    parser.add_argument("--data", default="auto", help="dataset (default auto: CIFAR-10)")
    parser.add_argument("--trials", type=int, default=1000, help="candidates scored (default 1000)")
    parser.add_argument("--confirm", type=int, default=3, help="confirmed at the top rung (default 3)")
    parser.add_argument("--val-images", type=int, default=None, help="validation images per score (default the "
                                                                      "search's --proxy-val-subset)")
    parser.add_argument("--supernet-recipe", default="auto", help="cpu, gpu, auto or a recipe YAML (default auto)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline", action="store_true", help="also run the default proxy search, same budget")
    parser.add_argument("--runs", type=Path, default=Path("runs/bench-supernet-search"),
                        help="where the run directories go (replaced)")
    parser.add_argument("--quick", action="store_true", help="tiny proxy settings (smoke run)")
    parser.add_argument("--out", type=Path, default=None, help="results JSON")
    args = parser.parse_args(argv)

    common: dict[str, Any] = {"space": args.space, "budget": args.budget, "data": args.data, "seed": args.seed,
                              "self_check": 0, **(QUICK if args.quick else {})}
    proxy = dict(common.get("proxy", {}))
    if args.val_images is not None:
        proxy["val_subset"] = args.val_images
    shutil.rmtree(args.runs, ignore_errors=True)
    results: dict[str, Any] = {"machine": cpu_model(), "budget": args.budget, "space": args.space}
    supernet = {**common, "proxy": proxy, "estimator": "supernet", "trials": args.trials, "confirm": args.confirm,
                "supernet_recipe": args.supernet_recipe}
    results["supernet"] = _search(supernet, args.runs / "supernet")
    if args.baseline:
        results["proxy"] = _search(common, args.runs / "proxy")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
    print(_table(results))
    return 0


def _table(results: dict[str, Any]) -> str:
    lines = [f"Searching {results['space']} at {results['budget']} ({results['machine']})", "",
             "| search | scored | scoring wall | scored per CPU-minute | trainings | training wall | total wall | "
             "best at the top rung |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for name in ("supernet", "proxy"):
        r = results.get(name)
        if r is None:
            continue
        s, t, b = r["scoring"], r["training"], r["best"]
        rate = f"{60 * s['n'] / s['cpu_s']:.0f}" if s and s["cpu_s"] else "-"
        best = f"{b['accuracy']:.2f}% (rung {b['rung']}, {b['macs'] / 1e9:.2f} GMACs)" if b else "-"
        lines.append(f"| {name} | {s['n'] if s else 0} | {s['wall_s'] if s else 0:.0f} s | {rate} | "
                     f"{t['n'] if t else 0} | {t['wall_s'] if t else 0:.0f} s | {r['wall_s']:.0f} s | {best} |")
    supernet = results["supernet"]["supernet"]
    lines.append(f"\nsupernet {supernet.get('supernet')}: "
                 f"{'cached (not trained by this run)' if supernet.get('cached') else 'trained by this run'}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(run_main(main))
