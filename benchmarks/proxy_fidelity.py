"""Proxy fidelity: how well cheap accuracy estimates rank architectures, against 4x longer training.

For architectures sampled from search spaces (``cvt13-nas``, and ``cct`` when registered), it measures

* (a) the default proxy: ``train_proxy`` with ``ProxyConfig()`` (what the search uses),
* (b) every training-free score in ``nas.proxy.zero_cost`` (and parameter / MAC counts as baselines),
* (c) the reference: the same training ``--long-factor`` (4) times longer (epochs x 4, same data),

and prints Kendall tau and Spearman rho of (a) and (b) against (c), per space and overall, with the time
each costs per candidate. Results go to ``--out`` (JSON) after every architecture; rerunning with the
same ``--out`` skips the architectures already done, so a long run can be resumed. ``--shard K/N`` measures
the K-th of N MAC-balanced shares (one process per core or machine); ``--merge`` then joins the shards' files.

    python benchmarks/proxy_fidelity.py --quick --out /tmp/fidelity-quick.json      # smoke run, minutes
    python benchmarks/proxy_fidelity.py --archs 12 --out fidelity.json              # full: ~1 h, quiet machine
    python benchmarks/proxy_fidelity.py --shard 0/2 --threads 1 --out a.json &      # the same on two cores,
    python benchmarks/proxy_fidelity.py --shard 1/2 --threads 1 --out b.json; wait  # then:
    python benchmarks/proxy_fidelity.py --merge a.json b.json --out fidelity.json
"""
from __future__ import annotations

import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Sequence


import nas  # noqa: F401  (first of all: OpenMP's policy before torch loads, then the torchvision fix)
import optuna
import torch

from cvt import UserError
from nas.cli import ArgumentParser, add_job_options, print_epochs, run_main
from nas.cost import analytic_macs, analytic_params
from nas.data import load_dataset
from nas.ranking import balanced_shard
from nas.proxy import ProxyConfig, TrainingFailed, proxy_model_config, train_proxy, zero_cost
from search_spaces import get_space, list_spaces

QUICK = {"epochs": 1, "train_subset": 256, "val_subset": 256, "width_mult": 0.25}


def sample_architectures(space_name: str, count: int, seed: int) -> list[Any]:
    """``count`` distinct configs drawn uniformly from the space (Optuna's random sampler, seeded)."""
    space = get_space(space_name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    configs: dict[str, Any] = {}
    for _ in range(50 * count):
        if len(configs) == count:
            break
        config = space.decode(space.sample(study.ask()))
        configs.setdefault(config.arch_id(), config)
    return list(configs.values())


def shard_members(configs: Sequence[Any], proxy: ProxyConfig, dataset: Any, shard: int, shards: int) -> set[int]:
    """Indices of ``configs`` that shard ``shard`` of ``shards`` measures, balanced by training MACs."""
    macs = [analytic_macs(proxy_model_config(c, proxy, in_chans=dataset.in_chans), proxy.resolution,
                          num_classes=dataset.num_classes) for c in configs]
    return set(balanced_shard(macs, shard, shards))


def load_rows(path: Path, proxy: ProxyConfig, long_factor: int) -> list[dict[str, Any]]:
    """The rows of an earlier results file, which must have been measured with the same training settings.

    Where it ran (``device``, ``threads``) may differ: that is what shards on other cores or machines do.
    """
    try:
        saved = json.loads(path.read_text())
        theirs = {**saved["proxy"], "long_factor": saved["long_factor"]}
        rows = saved["rows"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path}: not a proxy_fidelity results file ({err})") from None
    ours = {**proxy.to_dict(), "long_factor": long_factor}
    differ = sorted(k for k in ours.keys() | theirs.keys()
                    if k not in ("device", "threads") and ours.get(k) != theirs.get(k))
    if differ:
        raise UserError(f"{path} was measured with other settings: "
                        + ", ".join(f"{k} {theirs.get(k)} there, {ours.get(k)} here" for k in differ)
                        + "; pass the same options (or another --out)")
    return rows


def _timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


def trainings(proxy: ProxyConfig, long_factor: int) -> tuple[tuple[str, ProxyConfig], ...]:
    """The two trainings of every architecture: the proxy, and the reference ``long_factor`` x longer."""
    return ("proxy", proxy), ("long", proxy.replace(epochs=proxy.epochs * long_factor))


def measure(config: Any, dataset: Any, proxy: ProxyConfig, long_factor: int) -> dict[str, Any]:
    """Every predictor and the reference for one architecture."""
    trained = proxy_model_config(config, proxy, in_chans=dataset.in_chans)
    row: dict[str, Any] = {"values": {}, "seconds": {}}
    for name, fn in (("params", lambda: analytic_params(trained, num_classes=dataset.num_classes)),
                     ("macs", lambda: analytic_macs(trained, proxy.resolution, num_classes=dataset.num_classes))):
        row["values"][name], row["seconds"][name] = _timed(fn)
    for name in zero_cost.SCORES:
        row["values"][name], row["seconds"][name] = _timed(zero_cost.score, name, config, dataset, proxy)
    for name, settings in trainings(proxy, long_factor):
        try:
            result = train_proxy(config, dataset, settings, report=print_epochs(name, settings.epochs))
            row["values"][name], row["seconds"][name] = result.accuracy, result.wall_time_s
        except TrainingFailed as err:  # recorded, and left out of the correlations
            row["values"][name], row["seconds"][name] = float("nan"), float("nan")
            row.setdefault("failures", {})[name] = err.reason
    return row


def retrain(config: Any, dataset: Any, settings: ProxyConfig) -> float:
    """Top-1 of one more training, NaN when it fails (a failed seed is part of the noise, not a crash)."""
    try:
        return train_proxy(config, dataset, settings).accuracy
    except TrainingFailed as err:
        print(f"  training failed under seed {settings.seed}: {err.reason}", flush=True)
        return float("nan")


def rank_correlations(rows: list[dict[str, Any]], predictor: str) -> tuple[float, float, int]:
    """Kendall tau and Spearman rho of ``predictor`` against the long training, and the count used."""
    from scipy.stats import kendalltau, spearmanr

    pairs = [(r["values"][predictor], r["values"]["long"]) for r in rows]
    pairs = [(x, y) for x, y in pairs if not (math.isnan(x) or math.isnan(y))]
    if len(pairs) < 3:
        return float("nan"), float("nan"), len(pairs)
    xs, ys = zip(*pairs)
    return float(kendalltau(xs, ys).statistic), float(spearmanr(xs, ys).statistic), len(pairs)


def print_tables(rows: list[dict[str, Any]], long_factor: int) -> None:
    predictors = ["proxy", *zero_cost.SCORES, "params", "macs"]
    print("\n| space | arch | MACs | params | proxy acc % | long acc % | "
          + " | ".join(zero_cost.SCORES) + " |")
    print("|---|---|---:|---:|---:|---:|" + "---:|" * len(zero_cost.SCORES))
    for r in rows:
        v = r["values"]
        print(f"| {r['space']} | {r['arch_id']} | {v['macs'] / 1e6:.1f}M | {v['params'] / 1e6:.2f}M | "
              f"{v['proxy']:.1f} | {v['long']:.1f} | " + " | ".join(f"{v[s]:.3g}" for s in zero_cost.SCORES) + " |")
    groups = {"all": rows}
    if len({r["space"] for r in rows}) > 1:
        groups.update({space: [r for r in rows if r["space"] == space] for space in sorted({r["space"] for r in rows})})
    print(f"\nRank agreement with {long_factor}x longer training (Kendall tau / Spearman rho, n architectures)")
    print("| predictor | " + " | ".join(groups) + " | seconds per candidate (median) |")
    print("|---|" + "---:|" * (len(groups) + 1))
    for name in predictors + ["long"]:
        cells = []
        for group in groups.values():
            if name == "long":
                cells.append("reference")
                continue
            tau, rho, n = rank_correlations(group, name)
            cells.append(f"{tau:+.2f} / {rho:+.2f} (n={n})")
        seconds = statistics.median(r["seconds"][name] for r in rows)
        label = {"proxy": "proxy training", "long": f"{long_factor}x longer training"}.get(name, name)
        print(f"| {label} | " + " | ".join(cells) + f" | {seconds:.3g} |")


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    add_job_options(parser, "results")
    parser.add_argument("--space", action="append", default=None,
                        help="search space to sample (repeatable); default cvt13-nas, plus cct when registered")
    parser.add_argument("--archs", type=int, default=12, help="architectures per space (default 12)")
    parser.add_argument("--long-factor", type=int, default=4, help="reference training = this many x epochs")
    parser.add_argument("--seed", type=int, default=0, help="architecture sampling seed (proxy seed stays 0)")
    parser.add_argument("--epochs", type=int, default=None, help="proxy epochs (default: ProxyConfig's)")
    parser.add_argument("--train-subset", type=int, default=None, help="proxy training images (default: ProxyConfig's)")
    parser.add_argument("--val-subset", type=int, default=None, help="validation images (default: ProxyConfig's)")
    parser.add_argument("--width-mult", type=float, default=None,
                        help="proxy width multiplier for every stage (default: ProxyConfig's, 1.0)")
    parser.add_argument("--noise-seeds", type=int, default=0,
                        help="retrain each space's first architecture under this many more seeds (noise floor)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: 4 archs per space, proxy {QUICK}")
    args = parser.parse_args(argv)
    if args.quick:
        args.archs = min(args.archs, 4)
    spaces = args.space or ["cvt13-nas"] + (["cct"] if "cct" in list_spaces() else [])
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    dataset = load_dataset(args.data, args.data_dir)
    overrides = {k: v for k, v in (("epochs", args.epochs), ("train_subset", args.train_subset),
                                   ("val_subset", args.val_subset), ("width_mult", args.width_mult))
                 if v is not None}
    proxy = ProxyConfig(device=args.device, threads=args.threads, **(QUICK if args.quick else overrides))
    print(f"dataset: {dataset.name} ({dataset.description.get('source')}); proxy: {proxy.to_dict()}", flush=True)
    for warning in dataset.description["warnings"]:
        print(f"WARNING: {warning}", flush=True)
    done: dict[str, dict[str, Any]] = {}
    resumed = [args.out] if args.out is not None and args.out.is_file() else []
    for path in resumed + args.merge:
        rows = load_rows(path, proxy, args.long_factor)
        done.update({r["space"] + "/" + r["arch_id"]: r for r in rows})
        print(f"{'resuming' if path == args.out else 'merging'}: {len(rows)} architecture(s) from {path}")
    shard, shards = args.shard
    rows = []
    for space in spaces:
        configs = sample_architectures(space, args.archs, args.seed)
        mine = shard_members(configs, proxy, dataset, shard, shards)
        for i, config in enumerate(configs):
            key = f"{space}/{config.arch_id()}"
            if i not in mine and key not in done:
                continue
            row = done.get(key)
            if row is None:
                row = {"space": space, "arch_id": config.arch_id(), "config": config.to_dict(),
                       **measure(config, dataset, proxy, args.long_factor)}
            rows.append(row)
            v = row["values"]
            print(f"{space} {i + 1}/{args.archs} {row['arch_id']}: proxy {v['proxy']:.1f}% "
                  f"({row['seconds']['proxy']:.0f} s), long {v['long']:.1f}% ({row['seconds']['long']:.0f} s)"
                  + "".join(f"  FAILED {k}: {m}" for k, m in row.get("failures", {}).items()), flush=True)
            save(args.out, dataset, proxy, args.long_factor, rows)
        # The noise floor: the space's first architecture again under other seeds (by the shard holding it).
        # A predictor cannot rank architectures whose differences are smaller than what the seed alone moves.
        first = next((r for r in rows if r["space"] == space and r["arch_id"] == configs[0].arch_id()), None)
        seeds = range(1, args.noise_seeds + 1) if first is not None else range(0)  # another shard holds it
        for seed in seeds:
            noise = first.setdefault("noise", {})
            if str(seed) not in noise:
                noise[str(seed)] = {name: retrain(configs[0], dataset, settings.replace(seed=seed))
                                    for name, settings in trainings(proxy, args.long_factor)}
                print(f"{space} {first['arch_id']} seed {seed}: proxy {noise[str(seed)]['proxy']:.1f}%, "
                      f"long {noise[str(seed)]['long']:.1f}%", flush=True)
                save(args.out, dataset, proxy, args.long_factor, rows)
    print_tables(rows, args.long_factor)
    print_noise(rows)
    return 0


def save(out: Path | None, dataset: Any, proxy: ProxyConfig, long_factor: int, rows: list[dict[str, Any]]) -> None:
    if out is not None:
        out.write_text(json.dumps({"dataset": dataset.description, "proxy": proxy.to_dict(), "long_factor": long_factor,
                                   "torch": torch.__version__, "rows": rows}, indent=1) + "\n")


def _sd(values: list[dict[str, float]], key: str) -> float:
    """Sample standard deviation of the finite ``key`` values; NaN below two of them."""
    finite = [v[key] for v in values if not math.isnan(v[key])]
    return statistics.stdev(finite) if len(finite) > 1 else float("nan")


def print_noise(rows: list[dict[str, Any]]) -> None:
    """Seed-to-seed spread of one architecture next to the spread across architectures (sample sd)."""
    noisy = [r for r in rows if r.get("noise")]
    if not noisy:
        return
    print("\nNoise floor: one architecture under several seeds vs the sampled architectures under seed 0 (sd, %)")
    print("| space | arch | seeds | proxy sd (seeds) | proxy sd (architectures) | long sd (seeds) "
          "| long sd (architectures) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in noisy:
        same = [r["values"]] + list(r["noise"].values())
        across = [x["values"] for x in rows if x["space"] == r["space"]]
        print(f"| {r['space']} | {r['arch_id']} | {len(same)} | {_sd(same, 'proxy'):.2f} | "
              f"{_sd(across, 'proxy'):.2f} | "
              f"{_sd(same, 'long'):.2f} | {_sd(across, 'long'):.2f} |")


if __name__ == "__main__":
    sys.exit(run_main(main))
