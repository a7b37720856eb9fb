"""Build the ranking oracle: reference architectures in a band under a budget, trained with the reference recipe.

Samples ``--members`` architectures of ``--space`` uniformly within ``--band`` of ``--budget`` (priced as
``nas.search`` prices them), adds the baselines (CvT-13 shrunk in width to fit, CvT-13 as the over-budget
anchor), and trains each with the reference recipe (``nas.ranking.REFERENCE_RECIPE``); the first
``--noise-members`` again under each further seed, which gives the noise ceiling (Kendall tau between two
seeds). Results go to ``--out`` after every training; rerunning skips what is done. ``--shard K/N`` trains
the K-th of N MAC-balanced shares (one process per core or machine) and ``--merge`` joins shard files.
Without work left (or with ``--report``) it prints the table and the noise ceiling.

    python benchmarks/ranking_oracle.py --threads 1 --shard 0/2 --out oracle-0.json &    # two cores:
    python benchmarks/ranking_oracle.py --threads 1 --shard 1/2 --out oracle-1.json; wait
    python benchmarks/ranking_oracle.py --merge oracle-0.json oracle-1.json --out cvt-4gflops.json --report
    python benchmarks/ranking_oracle.py --quick --data synthetic --out /tmp/oracle-quick.json            # smoke run

The GPU edition (``--recipe gpu --device cuda``) runs as several shard processes sharing one GPU; the GPU suite
(``benchmarks/gpu_suite.py``, part "oracle") starts four and merges them.
"""
from __future__ import annotations

import math
import statistics
import sys
from typing import Sequence

from nas.cli import ArgumentParser, add_job_options, run_main, train_references
from nas.data import load_dataset
from nas.ranking import (RECIPES, OracleSpec, OracleStore, Reference, jobs, kendall_tau, pending,
                         reference_architectures, shard_jobs)

QUICK = {"epochs": 1, "train_subset": 256, "val_subset": 128, "width_mult": 0.25}


def print_report(store: OracleStore, refs: Sequence[Reference], seeds: int) -> None:
    """The reference table, then rank agreement within the band: the noise ceiling and the size baselines."""
    print("\n| # | kind | architecture | GMACs | params (M) | depths | widths | "
          + " | ".join(f"seed {s} %" for s in range(seeds)) + " | minutes (seed 0) |")
    print("|---:|---|---|---:|---:|---|---|" + "---:|" * (seeds + 1))
    for i, r in enumerate(refs, 1):
        accs = " | ".join(f"{store.accuracy(r.arch_id, s):.2f}" if store.has(r.arch_id, s) else ""
                          for s in range(seeds))
        wall = (store.get(r.arch_id, "0") or {}).get("wall_time_s", math.nan)
        print(f"| {i} | {r.kind} | {r.name} `{r.arch_id}` | {r.macs / 1e9:.2f} | {r.params / 1e6:.2f} | "
              f"{'/'.join(map(str, r.config.depths))} | {'/'.join(map(str, r.config.embed_dims))} | {accs} | "
              f"{wall / 60:.1f} |")
    band = [r for r in refs if r.in_band]
    truth = {r.arch_id: store.accuracy(r.arch_id) for r in band}
    done = [a for a, v in truth.items() if not math.isnan(v)]
    print(f"\nWithin the band: {len(done)} of {len(band)} trained under seed 0"
          + (f", accuracy {min(truth[a] for a in done):.2f}-{max(truth[a] for a in done):.2f}% "
             f"(sd {statistics.stdev(truth[a] for a in done):.2f})" if len(done) > 1 else ""))
    print("| against seed 0 | Kendall tau | n |")
    print("|---|---:|---:|")
    for s in range(1, seeds):
        tau, n = kendall_tau({r.arch_id: store.accuracy(r.arch_id, s) for r in band}, truth)
        print(f"| seed {s} (noise ceiling) | {tau:+.2f} | {n} |")
    for name in ("params", "macs"):
        tau, n = kendall_tau({r.arch_id: float(getattr(r, name)) for r in band}, truth)
        print(f"| {name} | {tau:+.2f} | {n} |")


def main(argv: Sequence[str] | None = None) -> int:
    defaults = OracleSpec()
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default=defaults.space, help=f"search space (default {defaults.space})")
    parser.add_argument("--budget", default=defaults.budget, help=f"MACs or params budget (default {defaults.budget})")
    parser.add_argument("--band", type=float, nargs=2, default=defaults.band, metavar=("LOW", "HIGH"),
                        help="band as fractions of the budget (default %(default)s)")
    parser.add_argument("--sample-seed", type=int, default=defaults.sample_seed, help="sampling seed (default 0)")
    parser.add_argument("--members", type=int, default=defaults.members,
                        help=f"architectures sampled in the band (default {defaults.members}; may grow later)")
    parser.add_argument("--seeds", type=int, default=defaults.seeds,
                        help=f"seeds per noise member (default {defaults.seeds})")
    parser.add_argument("--noise-members", type=int, default=defaults.noise_members,
                        help=f"first sampled members trained under every seed (default {defaults.noise_members})")
    parser.add_argument("--max-draws", type=int, default=defaults.max_draws,
                        help=f"samples drawn before giving up on filling the band (default {defaults.max_draws})")
    parser.add_argument("--recipe", choices=tuple(RECIPES), default="cpu",
                        help="the reference recipe: cpu (20,000 images, 3 epochs) or gpu (all 50,000, 3 epochs, bf16; "
                             "nas.ranking.GPU_RECIPE); each edition is its own oracle file")
    add_job_options(parser, "oracle results")
    parser.add_argument("--report", action="store_true", help="print the table only; train nothing")
    parser.add_argument("--quick", action="store_true", help=f"smoke run: recipe {QUICK}, 4 members")
    args = parser.parse_args(argv)

    spec = OracleSpec(space=args.space, budget=args.budget, band=tuple(args.band), sample_seed=args.sample_seed,
                      max_draws=args.max_draws,
                      members=min(args.members, 4) if args.quick else args.members, seeds=args.seeds,
                      noise_members=min(args.noise_members, 2) if args.quick else args.noise_members,
                      recipe=RECIPES[args.recipe].replace(**QUICK) if args.quick else RECIPES[args.recipe])
    dataset = load_dataset(args.data, args.data_dir)
    for warning in dataset.description["warnings"]:
        print(f"WARNING: {warning}", flush=True)
    refs = reference_architectures(spec)
    store = OracleStore.open(args.out, spec, dataset)
    for path in args.merge:
        print(f"merging {store.merge(path)} result(s) from {path}")
    if args.merge:
        store.save()
    work = pending(store, shard_jobs(jobs(spec, refs), spec, dataset, *args.shard))
    print(f"oracle: {spec.space} at {spec.budget_value}, band {spec.band[0]:g}-{spec.band[1]:g}, {len(refs)} "
          f"architectures; recipe {store.identity['recipe']}; {len(work)} training(s) left in shard "
          f"{args.shard[0]}/{args.shard[1]}", flush=True)
    if args.report:
        work = []
    train_references(store, work, spec, dataset, device=args.device, threads=args.threads)
    print_report(store, refs, spec.seeds)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
