"""The cost model against its references, in one process.

1. Analytic MACs/params vs the fvcore tracer (``count_macs`` from a config: build + trace), on the presets
   and on random members of every space: agreement (worst relative MAC difference, params exact) and
   speed. Each config is timed analytic, then fvcore, back to back, so load from other processes hits
   both; the table prints the median per-config speed ratio.
2. The latency predictor: the committed table's build report (held-out accuracy, build time) and, with
   ``--verify N``, its accuracy now on N new random architectures measured by the protocol.
3. CvT-13 / CvT-21 latency by the protocol (median, IQR), with the table's prediction beside it.

    python benchmarks/cost_model.py                         # 200 members per space at 64 px, verify 10
    python benchmarks/cost_model.py --quick                 # 20 members, no verification
    python benchmarks/cost_model.py --table experiments/latency/cpu_cvt13-nas.json --verify 30
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Sequence


import nas  # noqa: F401  (first of all: OpenMP's policy before torch loads, then the torchvision fix)
import cvt
import numpy as np
import torch

from nas.cli import ArgumentParser, run_main
from nas.cost import (LatencyPredictor, accuracy_report, analytic_macs, analytic_params, count_macs,
                      count_params, measure_latency)
from search_spaces import get_space, list_spaces

ROOT = Path(__file__).resolve().parents[1]


def _time(fn, repeats: int) -> float:
    """Median seconds per call."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _agreement(label: str, configs: list, resolution: int | None) -> None:
    worst, params_ok, ratios, t_an, t_fv = 0.0, True, [], [], []
    for config in configs:
        a = _time(lambda config=config: analytic_macs(config, resolution), 50)
        t0 = time.perf_counter()
        traced = count_macs(config, resolution)
        f = time.perf_counter() - t0
        worst = max(worst, abs(analytic_macs(config, resolution) / traced - 1))
        params_ok &= analytic_params(config) == count_params(config)
        ratios.append(f / a)
        t_an.append(a)
        t_fv.append(f)
    res = resolution or "native"
    print(f"| {label} | {len(configs)} | {res} | {100 * worst:.4f}% | {'exact' if params_ok else 'DIFFER'} | "
          f"{1e6 * statistics.median(t_an):.0f} us | {1e3 * statistics.median(t_fv):.0f} ms | "
          f"{statistics.median(ratios):,.0f}x |", flush=True)


def _latency_rows(predictor: LatencyPredictor | None, threads: int, repeats: int) -> None:
    clocks = ("wall", "cpu") if threads == 1 else ("wall",)
    print("\n| model | MACs | clock | median (ms) | IQR (ms) | 1-min load | table prediction (ms) | "
          "predicted / measured |")
    print("|---|---|---|---|---|---|---|---|")
    for name in ("cvt_13", "cvt_21"):
        config = cvt.preset(name)
        pred = predictor.predict(config) if predictor is not None else float("nan")
        for clock in clocks:  # back to back, so both see the same load
            r = measure_latency(config, threads=threads, repeats=repeats, warmup=5, clock=clock, use_cache=False)
            print(f"| {name} | {analytic_macs(config) / 1e9:.2f} G | {clock} | {r.median_ms:.1f} | {r.iqr_ms:.1f} | "
                  f"{r.load_avg:.1f} | {pred:.1f} | {pred / r.median_ms:.3f} |", flush=True)
    print(f"(batch 1, 224 px, fp32, {threads} thread(s), {repeats} repeats, on {r.device_name}; the table was "
          f"built with the {predictor.settings.get('clock', 'wall') if predictor else '-'} clock)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="benchmarks/cost_model.py", description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=200, help="random members per space")
    parser.add_argument("--resolution", type=int, default=64, help="resolution of the random members")
    parser.add_argument("--table", default=str(ROOT / "experiments/latency/cpu_cvt13-nas.json"))
    parser.add_argument("--verify", type=int, default=10, help="new architectures to check the table on")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for every timing (default 1)")
    parser.add_argument("--latency-repeats", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="20 members, no verification, 10 latency repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.members, args.verify, args.latency_repeats = 20, 0, 10
    torch.set_num_threads(args.threads)

    print(f"# cost model benchmark (torch {torch.__version__}, {args.threads} thread(s))\n")
    print("| configs | n | resolution | worst MAC difference | params | analytic | fvcore | fvcore / analytic |")
    print("|---|---|---|---|---|---|---|---|")
    presets = [cvt.preset(n) for n in ("cvt_13", "cvt_21", "cvt_w24", "cvt_13_384", "cvt_21_384")]
    _agreement("presets", presets, None)
    for name in list_spaces():
        space = get_space(name)
        rng = np.random.default_rng(0)
        _agreement(f"space {name}", [space.sample_config(rng) for _ in range(args.members)], args.resolution)

    predictor = None
    if Path(args.table).is_file():
        predictor = LatencyPredictor.load(args.table)
        rep, s = predictor.report, predictor.settings
        h = rep["holdout"]
        print(f"\ntable {args.table}: space {predictor.space}, {rep['entries']} operators, built in "
              f"{rep['build_time_s']:.0f} s on {predictor.device_name} ({s['threads']} thread(s), batch "
              f"{s['batch_size']}, {s['resolution']} px, {s['dtype']}, {s.get('clock', 'wall')} clock)")
        print(f"  at build: {h['n']} held-out architectures, {h['within_10pct']:.0%} within +-10%, "
              f"Kendall tau {h['kendall_tau']:.3f}, mean error {h['mape_pct']:.1f}%")
        if args.verify:
            space = get_space(predictor.space)
            rng = np.random.default_rng(12345)
            configs = [space.sample_config(rng) for _ in range(args.verify)]
            t0 = time.perf_counter()
            predicted = [predictor.predict(c) for c in configs]
            t_pred = (time.perf_counter() - t0) / len(configs)
            measured = [measure_latency(c, threads=s["threads"], batch_size=s["batch_size"],
                                        resolution=s["resolution"], dtype=s["dtype"], warmup=3, repeats=15,
                                        clock=s.get("clock", "wall"), use_cache=False).median_ms for c in configs]
            acc = accuracy_report(measured, predicted)
            print(f"  now: {acc['n']} new architectures, {acc['within_10pct']:.0%} within +-10%, Kendall tau "
                  f"{acc['kendall_tau']:.3f}, mean error {acc['mape_pct']:.1f}%; prediction "
                  f"{1e6 * t_pred:.0f} us per architecture vs {statistics.median(measured):.0f} ms measured")
    else:
        print(f"\nno latency table at {args.table}: build one with `python -m nas.latency build`")
    _latency_rows(predictor, args.threads, args.latency_repeats)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
