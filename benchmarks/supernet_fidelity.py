"""Weight sharing against the ranking oracle: how well a supernet's inherited accuracy ranks the band, at what cost.

Trains (or takes from the cache) one supernet over the oracle's space for the members whose MACs lie in ``--range``
times the oracle's budget, on the oracle's data (``nas.supernet``, CPU or GPU recipe), then scores every in-band
oracle architecture by its inherited accuracy (BatchNorm recalibrated per member). It prints Kendall tau within the
band, the regret of trusting its top-1 and whether the oracle's best is in its top 3, beside the proxy rungs an
``estimator_fidelity.py`` file measured (``--estimates``: the proxy at equal compute), the size baselines, random
order and the noise ceiling; and the costs: supernet training time, seconds per scored member, members scored per
CPU-minute (over ``--throughput`` random members of the range).

Scores go to ``--out`` after each one; a rerun takes the cached supernet and scores only what is missing.

    python benchmarks/supernet_fidelity.py --oracle experiments/results/ranking-oracle/cvt-4gflops.json \\
        --estimates experiments/results/ranking-oracle/estimates-cvt-4gflops.json \\
        --out experiments/results/supernet/cvt-4gflops-cpu.json
    python benchmarks/supernet_fidelity.py --oracle ORACLE.json --out s.json --quick      # smoke run
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Sequence

import nas  # noqa: F401  (first of all: OpenMP's policy before torch loads, then the torchvision fix)
import cvt
from cvt import UserError
from nas.cli import ArgumentParser, run_main
from nas.data import Dataset, load_dataset
from nas.devices import cpu_model
from nas.proxy import ProxyConfig, train_proxy
from nas.ranking import (EstimateStore, OracleStore, fidelity, fidelity_table, noise_ceiling, oracle_truth,
                         random_fidelity)
from nas.supernet import RECIPES, MemberRange, Supernet, SupernetRecipe, supernet_for
from search_spaces import get_space

QUICK = SupernetRecipe(steps=4, batch_size=16, train_subset=128, pool=10)
NAME = "supernet"
PROXY_ROWS = ("proxy", "proxy-2x", "proxy-4x", "proxy-8x")


def _fraction_pair(text: str) -> tuple[float, float]:
    try:
        low, high = (float(x) for x in text.split(","))
    except ValueError:
        raise UserError(f"--range {text!r}: give two fractions of the budget, such as 0.5,1.0") from None
    if not 0 <= low <= high:
        raise UserError(f"--range {text!r}: the first fraction must be at most the second")
    return low, high


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="benchmarks/supernet_fidelity.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--oracle", type=Path, required=True, help="the oracle file (merged shards)")
    parser.add_argument("--estimates", type=Path, default=None,
                        help="an estimator_fidelity.py file: its proxy rungs go in the table beside the supernet")
    parser.add_argument("--out", type=Path, default=None, help="scores JSON file (resumed when it exists)")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="cpu", help="supernet training recipe")
    parser.add_argument("--distill", action="store_true",
                        help="in-place distillation: members other than the largest learn from its predictions")
    parser.add_argument("--val-images", type=int, default=1000, metavar="N",
                        help="validation images each member is scored on (default 1000)")
    parser.add_argument("--calibration-batches", type=int, default=4, metavar="N",
                        help="training batches each member's BatchNorm statistics are re-estimated on (default 4)")
    parser.add_argument("--range", type=_fraction_pair, default=(0.5, 1.0), metavar="LOW,HIGH",
                        help="members trained: MACs within these fractions of the oracle's budget (default 0.5,1.0)")
    parser.add_argument("--throughput", type=int, default=100, metavar="N",
                        help="random members of the range scored to time scoring (default 100)")
    parser.add_argument("--data", default="auto", help="dataset name (default auto: the oracle's CIFAR-10)")
    parser.add_argument("--data-dir", default=None, help="data root (default $CVT_NAS_DATA)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all available)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--cache-dir", type=Path, default=None, help="supernet cache (default $CVT_NAS_CACHE)")
    parser.add_argument("--finetune", type=int, default=0, metavar="EPOCHS",
                        help="also train the supernet's top-1 band member for EPOCHS proxy epochs from its inherited "
                             "weights and from scratch, and print both per epoch")
    parser.add_argument("--quick", action="store_true", help=f"smoke run: recipe {QUICK}")
    args = parser.parse_args(argv)

    saved = OracleStore.read(args.oracle)
    oracle = OracleStore(None, saved["settings"])
    oracle.merge(args.oracle)
    identity = oracle.identity
    band = {a: r for a, r in oracle.architectures.items() if r["kind"] != "anchor"}
    if not band:
        raise UserError(f"{args.oracle} holds no trained architecture in its band yet; build the oracle first")
    dataset = load_dataset(args.data, args.data_dir)
    if dataset.description["name"] != identity["data"]["name"]:
        raise UserError(f"--data {dataset.description['name']}: the oracle was trained on "
                        f"{identity['data']['name']}; score on the same data")
    space = get_space(identity["space"])
    budget = identity["budget"]["value"]
    members = MemberRange(space, low=args.range[0] * budget, high=args.range[1] * budget)
    recipe = QUICK if args.quick else RECIPES[args.recipe]
    if args.distill:
        recipe = SupernetRecipe(**{**recipe.to_dict(), "distill": True})

    # Costs beside the scores: training time adds up over the runs that trained (a killed training resumes).
    costs_path = args.out.with_name(args.out.stem + "-costs.json") if args.out else None
    costs = json.loads(costs_path.read_text()) if costs_path is not None and costs_path.exists() else {}
    steps: list[int] = []
    start, cpu_start = time.perf_counter(), time.process_time()
    def on_step(step: int, losses: dict[str, float]) -> None:
        steps.append(step)
        if step % 100 == 0 or step == recipe.steps:  # a log line now and then: this runs for most of an hour
            print(f"  step {step}/{recipe.steps} ({time.perf_counter() - start:.0f} s): "
                  + ", ".join(f"{k} {v:.3f}" for k, v in losses.items()), flush=True)

    supernet = supernet_for(members, dataset, recipe, cache_dir=args.cache_dir, device=args.device,
                            threads=args.threads, progress=False, on_step=on_step)
    if steps:
        before = costs.get("training", {})
        costs["training"] = {"wall_s": before.get("wall_s", 0.0) + time.perf_counter() - start,
                             "cpu_s": before.get("cpu_s", 0.0) + time.process_time() - cpu_start,
                             "steps": recipe.steps, "machine": cpu_model(), "threads": args.threads}
    val_images = 32 if args.quick else args.val_images
    scoring = {"val_images": val_images, "calibration_batches": args.calibration_batches}
    store = EstimateStore.at(args.out, {"oracle": identity, "supernet": supernet.path.parent.name,
                                        "recipe": recipe.to_dict(), "range": list(args.range), "scoring": scoring})
    score = supernet.scorer(dataset, device=args.device, **scoring)
    family = cvt.family_named(space.family)
    todo = [a for a in sorted(band) if not store.has(a, NAME)]
    print(f"supernet {supernet.path} ({f'trained {len(steps)} steps' if steps else 'cached'}); "
          f"{len(todo)} of {len(band)} band architectures to score", flush=True)
    for i, arch_id in enumerate(todo, 1):
        config = family.config_cls.from_dict(band[arch_id]["config"])
        tick = time.perf_counter()
        value = score(config) if supernet.model.covers(config.replace(in_chans=dataset.in_chans)) else math.nan
        store.put(arch_id, NAME, {"value": value, "seconds": time.perf_counter() - tick}, band[arch_id])
        print(f"[{i}/{len(todo)}] {band[arch_id]['name']} {arch_id}: {value:.2f}%", flush=True)

    pool = members.pool(args.throughput, seed=recipe.seed + 1)
    tick, cpu_tick = time.perf_counter(), time.process_time()
    for config in pool:
        score(config)
    per_member = (time.perf_counter() - tick) / len(pool)
    per_cpu_minute = 60 * len(pool) / max(1e-9, time.process_time() - cpu_tick)

    truth = oracle_truth(oracle, sorted(band))
    rows = [fidelity(f"{NAME} (inherited)", store.values(NAME), truth, store.seconds(NAME))]
    if args.estimates:
        estimates = EstimateStore(None, EstimateStore.read(args.estimates)["settings"])
        estimates.merge(args.estimates)
        rows += [fidelity(name, estimates.values(name), truth, estimates.seconds(name)) for name in PROXY_ROWS
                 if estimates.values(name)]
    rows += [fidelity(name, {a: float(r[name]) for a, r in band.items()}, truth, 0.0) for name in ("params", "macs")]
    rows += [random_fidelity(truth), noise_ceiling(oracle, sorted(band))]
    print("\n" + fidelity_table(rows, f"Inherited accuracy against the oracle ({identity['space']}, band "
                                     f"{identity['band']} of {budget:.3g} MACs; supernet over "
                                     f"{args.range[0]:g}-{args.range[1]:g} of the budget, {args.recipe} recipe"
                                     f"{', distilled' if args.distill else ''}; scored on {val_images} images, "
                                     f"{args.calibration_batches} calibration batch(es))"))
    costs["scoring"] = {"seconds_per_member": per_member, "per_cpu_minute": per_cpu_minute, "n": len(pool),
                        "machine": cpu_model()}
    training = costs.get("training")
    trained = (f"{training['wall_s'] / 60:.1f} min wall, {training['cpu_s'] / 60:.1f} CPU-min "
               f"({training['machine']})" if training else "cached before these files")
    print(f"\nsupernet training: {trained}; scoring: {per_member:.2f} s per member, {per_cpu_minute:.0f} members "
          f"per CPU-minute ({len(pool)} random members of the range)")
    if args.finetune:
        costs["finetune"] = _finetune(supernet, store, band, family, dataset, args)
    if costs_path is not None:
        costs_path.write_text(json.dumps(costs, indent=1))
    return 0


def _finetune(supernet: Supernet, store: EstimateStore, band: dict, family: cvt.Family, dataset: Dataset,
              args: argparse.Namespace) -> dict:
    """The supernet's top-1 band member trained from its inherited weights and from scratch, per epoch."""
    values = {a: v for a, v in store.values(NAME).items() if math.isfinite(v)}
    best = max(values, key=values.get)
    config = family.config_cls.from_dict(band[best]["config"]).replace(in_chans=dataset.in_chans)
    proxy = ProxyConfig(epochs=args.finetune, device=args.device, threads=args.threads,
                        **({"train_subset": 128, "val_subset": 32} if args.quick else {}))
    inherited = supernet.model.extract(config)  # trained on this dataset: its classifier fits already
    runs = {"inherited": train_proxy(inherited, dataset, proxy), "scratch": train_proxy(config, dataset, proxy)}
    curves = {name: [h["accuracy"] for h in r.history] for name, r in runs.items()}
    print(f"\nfine-tuning {band[best]['name']} {best} ({args.finetune} proxy epochs, proxy settings): top-1 per epoch")
    print("| start | " + " | ".join(f"epoch {e + 1}" for e in range(args.finetune)) + " |")
    print("|---|" + "---:|" * args.finetune)
    for name, curve in curves.items():
        print(f"| {name} | " + " | ".join(f"{a:.2f}%" for a in curve) + " |")
    return {"arch_id": best, "epochs": args.finetune, **curves}


if __name__ == "__main__":
    sys.exit(run_main(main))
