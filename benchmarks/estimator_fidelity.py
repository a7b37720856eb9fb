"""Estimator fidelity against the ranking oracle: which estimator ranks the band best, per CPU-second.

For the in-band architectures of an oracle file (``benchmarks/ranking_oracle.py``) it measures every
estimator the search can use (``nas.estimators``): the default proxy training, the rungs of a multi-fidelity
search at 2x, 4x and 8x its budget (``nas.proxy.RungSchedule``: each rung continues the one below on twice the
images), and the training-free scores (NASWOT, synflow, grad_norm, DSS). It prints, per estimator: Kendall
tau against the oracle within the band, the regret of trusting its top-1 (oracle points lost), whether the
oracle's best is in its top 3, and the median seconds per candidate (for a rung, all rungs up to it); always
beside the size baselines (params, MACs), random order and the noise ceiling. The oracle's truth is each
architecture's mean accuracy over the seeds it has.

Results go to ``--out`` after every estimate; a rerun skips what is done (a rung resumes from its checkpoint
in ``--checkpoints``), ``--shard K/N`` takes a MACs-balanced share of the architectures and ``--merge`` joins
shard files.

    python benchmarks/estimator_fidelity.py --oracle experiments/results/ranking-oracle/cvt-4gflops.json \\
        --out experiments/results/ranking-oracle/estimates-cvt-4gflops.json --threads 1
    python benchmarks/estimator_fidelity.py --oracle ORACLE.json --estimators naswot dss proxy --out e.json
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Sequence

import nas  # noqa: F401  (first of all: OpenMP's policy before torch loads, then the torchvision fix)
import cvt
from cvt import UserError
from nas.cli import ArgumentParser, add_job_options, run_main
from nas.cost import analytic_macs
from nas.data import Dataset, default_cache_dir, load_dataset
from nas.estimators import make_estimator
from nas.proxy import ProxyConfig, RungSchedule, TrainingFailed, proxy_model_config, train_rung, zero_cost
from nas.ranking import (EstimateStore, OracleStore, balanced_shard, fidelity, fidelity_table, noise_ceiling,
                         oracle_truth, random_fidelity)
from search_spaces import get_space

RUNGS = RungSchedule((1, 2, 4, 8), growth="data")  # the proxy's budget x these: a multi-fidelity search's rungs
LADDER = tuple(f"proxy-{k}x" if k > 1 else "proxy" for k in RUNGS.multiples)
ESTIMATORS = LADDER + tuple(zero_cost.SCORES)
SIZES = ("params", "macs")  # from the oracle's records: free
QUICK = {"epochs": 1, "train_subset": 128, "val_subset": 64, "width_mult": 0.25}


def _climb(store: EstimateStore, config: object, dataset: Dataset, base: ProxyConfig, top: int, directory: Path,
           arch_id: str, architecture: dict, label: str) -> None:
    """Train one architecture up the rungs to ``top``, recording each rung (seconds: all rungs so far)."""
    # Resume from the highest rung kept whose lower rungs are all recorded.
    first = max((r for r in range(top + 1) if (directory / f"rung-{r}.pt").exists()
                 and all(store.has(arch_id, LADDER[q]) for q in range(r))), default=0)
    seconds = store.get(arch_id, LADDER[first - 1])["seconds"] if first else 0.0
    for rung in range(first, top + 1):
        name = LADDER[rung]
        start = time.perf_counter()
        try:
            result = train_rung(config, dataset, base, RUNGS, rung, directory)
        except TrainingFailed as err:
            print(f"  {name} failed: {err.reason}", flush=True)
            _record(store, arch_id, name, math.nan, time.perf_counter() - start, architecture, label)
            return
        seconds += result.wall_time_s
        earlier = store.get(arch_id, name)
        if earlier is not None and not math.isclose(earlier["value"], result.accuracy, abs_tol=1e-9):
            print(f"  note: {name} retrained at {result.accuracy:.4g}, recorded {earlier['value']:.4g} "
                  f"(other threads or machine); the recorded value stays", flush=True)
        if earlier is None:
            _record(store, arch_id, name, result.accuracy, seconds, architecture, label)
        if rung > 0:  # only the top checkpoint is needed to climb further
            (directory / f"rung-{rung - 1}.pt").unlink(missing_ok=True)


def _fingerprint(identity: dict) -> str:
    blob = json.dumps({"identity": identity, "rungs": RUNGS.to_dict()}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def _record(store: EstimateStore, arch_id: str, name: str, value: float, seconds: float, architecture: dict,
            label: str) -> None:
    store.put(arch_id, name, {"value": value, "seconds": seconds}, architecture)
    print(f"{label} {name}: {value:.4g} ({seconds:.1f} s)", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--oracle", type=Path, required=True, help="the oracle file (merged shards)")
    parser.add_argument("--estimators", nargs="+", default=list(ESTIMATORS), metavar="NAME",
                        help=f"estimators to measure (default all: {', '.join(ESTIMATORS)})")
    add_job_options(parser, "estimates")
    parser.add_argument("--report", action="store_true", help="print the table only; measure nothing")
    parser.add_argument("--checkpoints", type=Path, default=None, metavar="DIR",
                        help="where the rungs' checkpoints live (default: the cache, keyed by these settings)")
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
    archs = sorted(band)
    # Shares by architecture and MACs only, so that every run gives an architecture (and its rungs) the same shard.
    mine = [archs[i] for i in balanced_shard([macs[a] for a in archs], *args.shard)]
    todo = [] if args.report else [(a, [n for n in args.estimators if not store.has(a, n)]) for a in mine]
    todo = [(a, names) for a, names in todo if names]
    checkpoints = args.checkpoints or default_cache_dir() / "rungs" / _fingerprint(identity)
    print(f"{len(band)} architectures in the band of {args.oracle}; {sum(len(n) for _, n in todo)} estimate(s) to "
          f"make for {len(todo)} of them in shard {args.shard[0]}/{args.shard[1]}", flush=True)
    for i, (arch_id, names) in enumerate(todo, 1):
        label = f"[{i}/{len(todo)}] {band[arch_id]['name']} {arch_id}"
        for name in names:
            if name not in LADDER:
                start = time.perf_counter()
                value = make_estimator(name, base).estimate(configs[arch_id], dataset).accuracy
                _record(store, arch_id, name, value, time.perf_counter() - start, band[arch_id], label)
        ladder = [LADDER.index(n) for n in names if n in LADDER]
        if ladder:
            _climb(store, configs[arch_id], dataset, base, max(ladder), checkpoints / arch_id, arch_id,
                   band[arch_id], label)

    truth = oracle_truth(oracle, sorted(band))
    rows = [fidelity(name, store.values(name), truth, store.seconds(name)) for name in args.estimators]
    rows += [fidelity(name, {a: float(r[name]) for a, r in band.items()}, truth, 0.0) for name in SIZES]
    rows += [random_fidelity(truth), noise_ceiling(oracle, sorted(band))]
    trained = sum(math.isfinite(v) for v in truth.values())
    budget = oracle.identity["budget"]
    print("\n" + fidelity_table(rows, f"Fidelity against the oracle ({oracle.identity['space']}, band "
                                     f"{oracle.identity['band']} of {budget['value']:.3g} {budget['kind']}; {trained} "
                                     f"of {len(band)} architectures trained; truth = mean over seeds)"))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
