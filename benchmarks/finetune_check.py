"""Fine-tune check: does a search's proxy ranking hold when the same architectures train longer?

Takes exported configs (``python -m nas.export RUN_DIR --top 3``) and baselines (preset names such as
``cvt_13``), then trains each one twice with the search's own recipe, data and seed, read from the run
directory's ``run.json``: once at the proxy budget (the search's number, re-measured; the baselines get
the same budget) and once ``--factor`` times longer (epochs x factor, same images). Prints a table and the
Kendall tau between the two orders. Results go to ``--out`` after every training; rerunning with the same
``--out`` skips what is done, so an interrupted check resumes.

    python -m nas.export runs/cvt-13-nas-4gflops --top 3 --out runs/cvt-13-nas-4gflops/top3
    python benchmarks/finetune_check.py runs/cvt-13-nas-4gflops runs/cvt-13-nas-4gflops/top3/*.yaml \\
        --baseline cvt_13 --out runs/cvt-13-nas-4gflops/finetune.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Sequence


import nas  # noqa: F401  (first of all: OpenMP's policy before torch loads, then the torchvision fix)
import cvt
import torch

from cvt import UserError
from nas.cli import ArgumentParser, run_main
from nas.cost import analytic_macs, analytic_params
from nas.data import load_dataset
from nas.proxy import ProxyConfig, TrainingFailed, train_proxy
from nas.search import SearchConfig


def _candidates(configs: Sequence[Path], baselines: Sequence[str]) -> list[tuple[str, Any]]:
    named = [(path.stem, cvt.load_config(str(path))) for path in configs]
    return named + [(name, cvt.load_config(name)) for name in baselines]


def _train(config: Any, dataset: Any, proxy: ProxyConfig) -> tuple[float, float]:
    try:
        result = train_proxy(config, dataset, proxy)
    except TrainingFailed as err:
        print(f"  failed: {err.reason}", flush=True)
        return float("nan"), float("nan")
    return result.accuracy, result.wall_time_s


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="the search's run directory (its run.json gives recipe and data)")
    parser.add_argument("configs", type=Path, nargs="*", help="exported architecture configs (YAML or JSON)")
    parser.add_argument("--baseline", action="append", default=[], help="preset to train alongside (repeatable)")
    parser.add_argument("--factor", type=int, default=4, help="longer training = this many x epochs (default 4)")
    parser.add_argument("--data-dir", default=None, help="data root, if not the search's (default $CVT_NAS_DATA)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: the search's)")
    parser.add_argument("--out", type=Path, required=True, help="JSON results file (resumed when it exists)")
    args = parser.parse_args(argv)
    manifest_path = args.run_dir / "run.json"
    if not manifest_path.is_file():
        raise UserError(f"{args.run_dir} is not a search run directory (no run.json); give the --out of nas.search")
    if args.factor < 1:
        raise UserError(f"--factor {args.factor}: the longer training must be at least as long (>= 1)")
    manifest = json.loads(manifest_path.read_text())
    proxy = ProxyConfig.from_dict(manifest["proxy"])
    if args.threads is not None:
        proxy = proxy.replace(threads=args.threads)
    long = proxy.replace(epochs=proxy.epochs * args.factor)
    search = SearchConfig.from_dict(manifest["config"])
    dataset = load_dataset(search.training.data, args.data_dir or search.training.data_dir)
    candidates = _candidates(args.configs, args.baseline)
    print(f"{len(candidates)} architectures on {dataset.name}; proxy {proxy.epochs:g} epochs, "
          f"long {long.epochs:g} epochs of {proxy.train_subset} images, seed {proxy.seed}, "
          f"{proxy.threads or torch.get_num_threads()} thread(s)", flush=True)

    saved = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if saved and (saved.get("proxy") != proxy.to_dict() or saved.get("factor") != args.factor):
        raise UserError(f"{args.out} holds results of other settings; give another --out")
    rows = saved.get("rows", {})
    resolution = manifest["resolution"]
    num_classes = search.space.num_classes
    for name, config in candidates:
        row = rows.setdefault(name, {"arch_id": config.arch_id(), "baseline": name in args.baseline,
                                     "macs": analytic_macs(config, resolution, num_classes=num_classes),
                                     "params": analytic_params(config, num_classes=num_classes)})
        for key, settings in (("proxy", proxy), ("long", long)):
            if key not in row:
                row[key], row[f"{key}_s"] = _train(config, dataset, settings)
                print(f"{name}: {key} {row[key]:.2f}% ({row[f'{key}_s']:.0f} s)", flush=True)
                args.out.write_text(json.dumps({"dataset": dataset.description, "proxy": proxy.to_dict(),
                                                "factor": args.factor, "torch": torch.__version__,
                                                "rows": rows}, indent=1) + "\n")
    print_table({name: rows[name] for name, _ in candidates}, args.factor, resolution)
    return 0


def print_table(rows: dict[str, dict[str, Any]], factor: float, resolution: int) -> None:
    from scipy.stats import kendalltau

    print(f"\n| architecture | GMACs @{resolution} | params | proxy top-1 % | {factor:g}x longer top-1 % | "
          f"proxy rank | "
          f"longer rank |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    by_proxy = sorted(rows, key=lambda n: -rows[n]["proxy"])
    by_long = sorted(rows, key=lambda n: -rows[n]["long"])
    for name in by_proxy:
        r = rows[name]
        print(f"| {name} | {r['macs'] / 1e9:.3f} | {r['params'] / 1e6:.2f}M | {r['proxy']:.2f} | {r['long']:.2f} | "
              f"{by_proxy.index(name) + 1} | {by_long.index(name) + 1} |")
    tau = kendalltau([rows[n]["proxy"] for n in rows], [rows[n]["long"] for n in rows]).statistic
    print(f"\nKendall tau (proxy vs {factor:g}x longer), {len(rows)} architectures: {tau:+.2f}")


if __name__ == "__main__":
    sys.exit(run_main(main))
