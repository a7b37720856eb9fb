"""``python -m nas.latency``: measure latency, build and check latency tables.

    python -m nas.latency measure --preset cvt_13 --threads 1              # one model, by the protocol
    python -m nas.latency build --space cvt13-nas --device cpu --threads 1  # table -> experiments/latency/
    python -m nas.latency build --space cvt13-nas --threads 1 --clock cpu   # on a busy shared machine
    python -m nas.latency build --space cvt13-nas --device cuda             # a GPU table
    python -m nas.latency report experiments/latency/cpu_cvt13-nas.json --verify 10

Measure on a quiet machine: anything else running on the device shows up in the numbers. Builds reuse
whole-model measurements from the latency cache (``--no-cache`` measures again).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from cvt import UserError
from nas.cli import ArgumentParser, count, run_main
from nas.cost import DTYPES

DEFAULT_DIR = Path("experiments/latency")


def _settings_args(parser: ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--batch-size", type=count(1), default=1)
    parser.add_argument("--resolution", type=count(1), default=None, help="square input size (default: the config's)")
    parser.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--threads", type=count(1), default=None,
                        help="CPU threads (default: the CPUs this process may use)")
    parser.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                        help="cpu: process CPU time, for busy shared machines (CPU, --threads 1 only)")
    parser.add_argument("--cache-dir", default=None, help="latency cache (default $CVT_NAS_CACHE/latency)")
    parser.add_argument("--no-cache", action="store_true", help="measure again even if cached")


def default_table_path(device_name: str, device: str, space: str, clock: str = "wall") -> Path:
    """``experiments/latency/<device>_<space>.json``: ``cpu`` (``cpu-cputime`` for the CPU-time clock) or
    the GPU's name, e.g. ``nvidia-h100-80gb-hbm3``."""
    slug = "cpu" if device.startswith("cpu") else re.sub(r"[^a-z0-9]+", "-", device_name.lower()).strip("-")
    slug += "-cputime" if clock == "cpu" else ""
    return DEFAULT_DIR / f"{slug}_{re.sub(r'[^A-Za-z0-9.-]+', '-', space)}.json"


def _print_report(report: dict, settings: dict, signature: dict) -> None:
    h = report["holdout"]
    print(f"device {signature['device_name']} ({signature['device']}), torch {signature['torch']}, "
          f"threads {settings['threads']}, batch {settings['batch_size']}, {settings['resolution']}px, "
          f"{settings['dtype']}{', channels-last' if settings['channels_last'] else ''}, "
          f"{settings.get('clock', 'wall')} clock")
    print(f"table: {report['entries']} operators measured of {report['distinct_operators']} seen; "
          f"held-out coverage {report['table_coverage']:.0%}; build {report['build_time_s']:.0f} s")
    print(f"held-out ({h['n']} architectures never fitted): {h['within_10pct']:.0%} within +-10%, "
          f"Kendall tau {h['kendall_tau']:.3f}, mean error {h['mape_pct']:.1f}%, worst {h['max_error_pct']:.1f}%")


def _load_config(args: argparse.Namespace) -> Any:
    from cvt import load_config

    if bool(args.preset) == bool(args.config):
        raise UserError("give exactly one of --preset NAME or --config PATH.yaml")
    return load_config(args.preset or args.config)


def _warn_if_shared(device: str, threads: int | None, clock: str) -> None:
    """Wall-clock figures on CPUs other processes are using are inflated and noisy: say so, naming them."""
    from nas._contention import shared_cpus_warning
    from nas.devices import available_cpus, check_device

    if clock != "wall" or check_device(device).type != "cpu":
        return
    line = shared_cpus_warning(threads or available_cpus())
    if line is not None:
        print(f"warning: {line}. For latency on a busy machine, --clock cpu --threads 1 measures CPU time instead",
              file=sys.stderr)


def _measure(args: argparse.Namespace) -> int:
    from nas.cost import measure_latency

    _warn_if_shared(args.device, args.threads, args.clock)
    result = measure_latency(_load_config(args), device=args.device, batch_size=args.batch_size,
                             resolution=args.resolution, dtype=args.dtype, channels_last=args.channels_last,
                             threads=args.threads, warmup=args.warmup, repeats=args.repeats,
                             clock=args.clock, cache_dir=args.cache_dir, use_cache=not args.no_cache)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
    else:
        print(f"{result.median_ms:.3f} ms median, IQR {result.iqr_ms:.3f} ms, {result.repeats} repeats on "
              f"{result.device_name} ({result.settings['threads']} threads){' [cached]' if result.cached else ''}")
    return 0


def _build(args: argparse.Namespace) -> int:
    from nas.cost import LatencyPredictor

    _warn_if_shared(args.device, args.threads, args.clock)
    predictor = LatencyPredictor.build(
        args.space, device=args.device, batch_size=args.batch_size, resolution=args.resolution,
        dtype=args.dtype, channels_last=args.channels_last, threads=args.threads, fit=args.fit,
        holdout=args.holdout, seed=args.seed, max_entries=args.max_entries, warmup=args.warmup,
        repeats=args.repeats, model_warmup=args.model_warmup, model_repeats=args.model_repeats,
        clock=args.clock, cache_dir=args.cache_dir, use_cache=not args.no_cache,
        progress=lambda line: print(line, flush=True))
    out = Path(args.out) if args.out else default_table_path(predictor.device_name, args.device,
                                                             predictor.space, args.clock)
    predictor.save(out)
    _print_report(predictor.report, predictor.settings, predictor.signature)
    print(f"wrote {out}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from nas.cost import LatencyPredictor, accuracy_report, measure_latency

    predictor = LatencyPredictor.load(args.table)
    _print_report(predictor.report, predictor.settings, predictor.signature)
    if not args.verify:
        return 0
    import numpy as np

    from search_spaces import get_space

    s = predictor.settings
    _warn_if_shared(s["device"], s["threads"], s.get("clock", "wall"))
    space = get_space(args.space or predictor.space)
    rng = np.random.default_rng(args.seed)
    configs = [space.sample_config(rng) for _ in range(args.verify)]
    measured = [measure_latency(c, device=s["device"], batch_size=s["batch_size"], resolution=s["resolution"],
                                dtype=s["dtype"], channels_last=s["channels_last"], threads=s["threads"],
                                warmup=3, repeats=15, clock=s.get("clock", "wall"),
                                num_classes=s["num_classes"], use_cache=False).median_ms
                for c in configs]
    acc = accuracy_report(measured, [predictor.predict(c) for c in configs])
    print(f"verify now ({acc['n']} new architectures): {acc['within_10pct']:.0%} within +-10%, "
          f"Kendall tau {acc['kendall_tau']:.3f}, mean error {acc['mape_pct']:.1f}%")
    return 0


def build_parser() -> ArgumentParser:
    """The command line: one subcommand per task, each run by its own function."""
    parser = ArgumentParser(prog="python -m nas.latency",
                            description="Measure latency by the protocol; build and check latency tables.")
    sub = parser.add_subparsers(dest="command", required=True)

    m = sub.add_parser("measure", help="latency of one model by the protocol")
    m.add_argument("--preset", help="a preset name, e.g. cvt_13 or cct_7_3x1_32")
    m.add_argument("--config", help="a config YAML of any model family")
    m.add_argument("--warmup", type=count(0), default=10)
    m.add_argument("--repeats", type=count(1), default=50)
    m.add_argument("--json", action="store_true", help="print the full result as JSON")
    _settings_args(m)
    m.set_defaults(run=_measure)

    b = sub.add_parser("build", help="measure a space's operator table, calibrate, report held-out accuracy")
    b.add_argument("--space", required=True, help="cvt13-nas, cvt, cct or a space YAML")
    b.add_argument("--out", default=None, help="output JSON (default experiments/latency/<device>_<space>.json)")
    b.add_argument("--fit", type=int, default=30, help="architectures measured to fit the calibration")
    b.add_argument("--holdout", type=int, default=30, help="further architectures to report accuracy on")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--warmup", type=int, default=5, help="untimed calls per operator")
    b.add_argument("--repeats", type=int, default=30, help="timed calls per operator")
    b.add_argument("--model-warmup", type=int, default=3)
    b.add_argument("--model-repeats", type=int, default=15)
    b.add_argument("--max-entries", type=int, default=1000)
    _settings_args(b)
    b.set_defaults(run=_build)

    r = sub.add_parser("report", help="print a table's report; --verify N re-checks it on N new architectures")
    r.add_argument("table")
    r.add_argument("--verify", type=int, default=0, metavar="N")
    r.add_argument("--space", default=None, help="space to draw from (default: the table's; give the YAML path "
                                                  "for a user-defined space)")
    r.add_argument("--seed", type=int, default=1)
    r.set_defaults(run=_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(run_main(main))
