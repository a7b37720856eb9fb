"""Estimator fidelity against the ranking oracle: which estimator ranks the band best, per CPU-second.

For the in-band architectures of an oracle file (``benchmarks/ranking_oracle.py``) it measures every
estimator the search can use (``nas.estimators``): the default proxy training and the same at 2x, 4x and
8x its epochs (the rungs of a multi-fidelity search), and the training-free scores (NASWOT, synflow,
grad_norm, DSS). It prints, per estimator: Kendall tau against the oracle within the band, the regret of
trusting its top-1 (oracle points lost), whether the oracle's best is in its top 3, and the median seconds
per candidate; always beside the size baselines (params, MACs), random order and the noise ceiling.
The oracle's truth is each architecture's mean accuracy over the seeds it has.

Results go to ``--out`` after every estimate; a rerun skips what is done, ``--shard K/N`` takes a
cost-balanced share and ``--merge`` joins shard files.

    python benchmarks/estimator_fidelity.py --oracle experiments/results/ranking-oracle/cvt-4gflops.json \\
        --out experiments/results/ranking-oracle/estimates-cvt-4gflops.json --threads 1
    python benchmarks/estimator_fidelity.py --oracle ORACLE.json --estimators naswot dss proxy --out e.json
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Sequence

import cvt
from cvt import UserError
from nas.cli import ArgumentParser, add_job_options, run_main
from nas.cost import analytic_macs
from nas.data import load_dataset
from nas.estimators import make_estimator
from nas.proxy import ProxyConfig, TrainingFailed, proxy_model_config, zero_cost
from nas.ranking import (EstimateStore, Fidelity, OracleStore, balanced_shard, fidelity, noise_ceiling, oracle_truth,
                         random_fidelity)
from search_spaces import get_space

RUNGS = (1, 2, 4, 8)  # proxy epochs x this: the rungs of a multi-fidelity search
ESTIMATORS = tuple(f"proxy-{k}x" if k > 1 else "proxy" for k in RUNGS) + tuple(zero_cost.SCORES)
SIZES = ("params", "macs")  # from the oracle's records: free
QUICK = {"epochs": 1, "train_subset": 128, "val_subset": 64, "width_mult": 0.25}


def _settings(name: str, base: ProxyConfig) -> tuple[str, ProxyConfig]:
    """(estimator registered in nas.estimators, its settings) for a benchmark estimator name."""
    if name.startswith("proxy"):
        factor = int(name[len("proxy-"):-1]) if name != "proxy" else 1
        return "proxy", base.replace(epochs=base.epochs * factor)
    return name, base


def _cost(name: str, macs: float, base: ProxyConfig) -> float:
    # Training cost grows with MACs x epochs; a training-free score is one batch.
    return macs * (_settings(name, base)[1].epochs if name.startswith("proxy") else 0.01)


def print_table(rows: list[Fidelity], label: str) -> None:
    print(f"\n{label}")
    print("| estimator | Kendall tau in band | n | regret (points) | oracle best in top 3 | seconds per candidate |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        top3 = "" if math.isnan(r.top3) else ("yes" if r.top3 == 1 else "no" if r.top3 == 0 else f"p = {r.top3:.2f}")
        print(f"| {r.name} | {r.tau:+.2f} | {r.n} | {r.regret:.2f} | {top3} | {r.seconds:.3g} |")


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--oracle", type=Path, required=True, help="the oracle file (merged shards)")
    parser.add_argument("--estimators", nargs="+", default=list(ESTIMATORS), metavar="NAME",
                        help=f"estimators to measure (default all: {', '.join(ESTIMATORS)})")
    add_job_options(parser, "estimates")
    parser.add_argument("--report", action="store_true", help="print the table only; measure nothing")
    parser.add_argument("--quick", action="store_true", help=f"smoke run: proxy settings {QUICK}")
    args = parser.parse_args(argv)
    unknown = [e for e in args.estimators if e not in ESTIMATORS]
    if unknown:
        raise UserError(f"unknown estimator {unknown[0]!r}; use any of {', '.join(ESTIMATORS)}")

    saved = OracleStore.read(args.oracle)
    oracle = OracleStore(None, saved["settings"])
    oracle.merge(args.oracle)
    family = cvt.family_named(get_space(oracle.identity["space"]).family)
    band = {a: r for a, r in oracle.architectures.items() if r["kind"] != "anchor"}
    if not band:
        raise UserError(f"{args.oracle} holds no trained architecture in its band yet; build the oracle first")
    dataset = load_dataset(args.data, args.data_dir)
    data = dataset.description
    if data["name"] != oracle.identity["data"]["name"]:
        raise UserError(f"--data {data['name']}: the oracle was trained on {oracle.identity['data']['name']}; "
                        f"estimate on the same data")
    base = ProxyConfig(device=args.device, threads=args.threads, **(QUICK if args.quick else {}))
    identity = {"oracle": oracle.identity, "proxy": {k: v for k, v in base.to_dict().items()
                                                     if k not in ("device", "threads")},
                "data": oracle.identity["data"]}
    store = EstimateStore.at(args.out, identity)
    for path in args.merge:
        print(f"merging {store.merge(path)} estimate(s) from {path}")
    if args.merge:
        store.save()

    configs = {a: family.config_cls.from_dict(r["config"]) for a, r in band.items()}
    macs = {a: analytic_macs(proxy_model_config(c, base, in_chans=dataset.in_chans), base.resolution,
                             num_classes=dataset.num_classes) for a, c in configs.items()}
    work = [(name, a) for name in args.estimators for a in sorted(band)]
    mine = [work[i] for i in balanced_shard([_cost(n, macs[a], base) for n, a in work], *args.shard)]
    todo = [] if args.report else [(n, a) for n, a in mine if not store.has(a, n)]
    print(f"{len(band)} architectures in the band of {args.oracle}; {len(todo)} estimate(s) to make in shard "
          f"{args.shard[0]}/{args.shard[1]}", flush=True)
    for i, (name, arch_id) in enumerate(todo, 1):
        registered, settings = _settings(name, base)
        start = time.perf_counter()
        try:
            value = make_estimator(registered, settings).estimate(configs[arch_id], dataset).accuracy
        except TrainingFailed as err:
            print(f"  {name} {arch_id} failed: {err.reason}", flush=True)
            value = math.nan
        seconds = time.perf_counter() - start
        store.put(arch_id, name, {"value": value, "seconds": seconds}, band[arch_id])
        print(f"[{i}/{len(todo)}] {name} {band[arch_id]['name']} {arch_id}: {value:.4g} ({seconds:.1f} s)", flush=True)

    truth = oracle_truth(oracle, sorted(band))
    rows = [fidelity(name, store.values(name), truth, store.seconds(name)) for name in args.estimators]
    rows += [fidelity(name, {a: float(r[name]) for a, r in band.items()}, truth, 0.0) for name in SIZES]
    rows += [random_fidelity(truth), noise_ceiling(oracle, sorted(band))]
    trained = sum(math.isfinite(v) for v in truth.values())
    print_table(rows, f"Fidelity against the oracle ({oracle.identity['space']}, band {oracle.identity['band']} of "
                      f"{oracle.identity['budget']['value']:.3g} {oracle.identity['budget']['kind']}; {trained} of "
                      f"{len(band)} architectures trained; truth = mean over seeds)")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
