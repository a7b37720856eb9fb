"""Proxy training next to other work: how much slower with 0, 1 and 2 competing busy processes, per OpenMP policy.

A proxy training of one CvT-13-sized candidate (the default ``ProxyConfig`` with a step budget, on all the CPUs this
process may use) runs in a fresh process per measurement, because OpenMP reads its settings when torch loads. Beside
it the benchmark starts 0, 1 or 2 busy single-threaded processes (a Python loop), and stops them when the training
ends (or after ``--limit`` seconds). Every OpenMP policy in ``POLICIES`` is measured under every load, in rotating
order; the table gives the median wall time, its ratio to the same policy on a quiet machine, and to the default
policy on a quiet machine (what a policy costs when nothing competes). ``default`` is libgomp's own behaviour (the
process loads torch before ``nas``), ``nas`` what ``nas`` chooses on import (``nas/_openmp.py``): before and after.
``--task inference`` times CvT-13's batch-32 inference at 224 px instead (model speed under each policy).

    python benchmarks/contention.py --policies default,nas            # before and after, about 10 min on 2 cores
    python benchmarks/contention.py --policies default,nas --task inference --loads 0 --steps 5
    python benchmarks/contention.py --quick                           # smoke run: a few steps, one round

Run it on an otherwise quiet machine: the competing load is the benchmark's own.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]

# name -> environment set before torch loads. libgomp (torch's CPU wheels) spins a waiting thread for
# GOMP_SPINCOUNT iterations before it sleeps; PASSIVE sleeps at once.
# "default" is libgomp's own (torch loads before nas can choose); "nas" is what nas chooses on import (_openmp).
POLICIES: dict[str, dict[str, str]] = {
    "default": {},
    "nas": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin 1k": {"GOMP_SPINCOUNT": "1000"},
    "spin 2k": {"GOMP_SPINCOUNT": "2000"},
    "spin 3k": {"GOMP_SPINCOUNT": "3000"},
    "spin 5k": {"GOMP_SPINCOUNT": "5000"},
    "spin 10k": {"GOMP_SPINCOUNT": "10000"},
    "spin 100k": {"GOMP_SPINCOUNT": "100000"},
}

# One measurement in a fresh process: argv = steps, data, policy, task.
_TASK = """
import json, sys, time
steps, data, policy, task = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
if policy == "default":
    import torch  # noqa: F401  (loaded before nas: libgomp keeps its own default)
import nas, cvt, torch
if task == "train":
    from nas.data import load_dataset
    from nas.proxy import ProxyConfig, train_proxy
    dataset = load_dataset(data)
    start = time.perf_counter()
    result = train_proxy(cvt.preset("cvt_13"), dataset, ProxyConfig(steps=steps, val_subset=64))
    out = {"images_per_s": result.train_images_per_s, "threads": result.threads}
else:  # inference: CvT-13 at 224, batch 32, after one warm-up pass
    model, x = cvt.build_model(cvt.preset("cvt_13")).eval(), torch.randn(32, 3, 224, 224)
    with torch.no_grad():
        model(x)
        start = time.perf_counter()
        for _ in range(steps):
            model(x)
    out = {"images_per_s": 32 * steps / (time.perf_counter() - start), "threads": torch.get_num_threads()}
print(json.dumps({"wall_s": time.perf_counter() - start, **out}))
"""

_BUSY = "import time\nend = time.time() + float(__import__('sys').argv[1])\nwhile time.time() < end:\n    pass\n"


def measure(policy: str, load: int, steps: int, data: str, limit: float, task: str = "train") -> dict[str, float]:
    """One training (or inference run) under ``policy`` next to ``load`` busy processes."""
    from nas.devices import OPENMP_SETTINGS

    env = {k: v for k, v in os.environ.items() if k not in OPENMP_SETTINGS}
    env.update(POLICIES[policy], PYTHONPATH=str(ROOT))
    busy = [subprocess.Popen([sys.executable, "-c", _BUSY, str(limit)]) for _ in range(load)]
    try:
        done = subprocess.run([sys.executable, "-c", _TASK, str(steps), data, policy, task], capture_output=True,
                              text=True, env=env, timeout=limit, check=True)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: Sequence[str] | None = None) -> int:
    from nas.cli import ArgumentParser
    from nas.devices import available_cpus, cpu_model

    parser = ArgumentParser(prog="benchmarks/contention.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per training, or inference passes "
                                                              "(default 40)")
    parser.add_argument("--task", choices=("train", "inference"), default="train",
                        help="train: a proxy training; inference: CvT-13 at 224, batch 32 (model speed)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over every policy and load (median)")
    parser.add_argument("--loads", default="0,1,2", help="competing busy processes, comma-separated")
    parser.add_argument("--policies", default=",".join(POLICIES), help=f"from {', '.join(POLICIES)}")
    parser.add_argument("--data", default="synthetic", help="dataset (default synthetic: no files needed)")
    parser.add_argument("--limit", type=float, default=600, help="seconds after which a training is stopped")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 steps, one round, loads 0 and 1")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.rounds, args.loads = 3, 1, "0,1"
    loads = [int(x) for x in args.loads.split(",")]
    policies = [p.strip() for p in args.policies.split(",")]
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        parser.error(f"unknown policy {unknown[0]!r}; choose from {', '.join(POLICIES)}")
    runs: dict[tuple[str, int], list[dict[str, float]]] = {(p, n): [] for p in policies for n in loads}
    cases = list(runs)
    for r in range(args.rounds):
        for i in range(len(cases)):  # rotate so no case always runs first or last
            policy, load = cases[(i + r) % len(cases)]
            result = measure(policy, load, args.steps, args.data, args.limit, args.task)
            runs[(policy, load)].append(result)
            print(f"round {r + 1}: {policy:<10} load {load}: {result['wall_s']:.1f} s", flush=True)

    def wall(policy: str, load: int) -> float:
        return statistics.median(x["wall_s"] for x in runs[(policy, load)])

    quiet = "default" if "default" in policies else policies[0]
    what = (f"Proxy training of CvT-13 ({args.steps} steps, {args.data}" if args.task == "train" else
            f"Inference of CvT-13 (224 px, batch 32, {args.steps} passes")
    print(f"\n{what}, {available_cpus()} CPUs) next to busy processes; median of {args.rounds} round(s); "
          f"{cpu_model()}, {os.cpu_count()} logical cores")
    print(f"| policy | competing processes | wall s | vs same policy, quiet | vs {quiet}, quiet |")
    print("|---|---:|---:|---:|---:|")
    for policy in policies:
        for load in loads:
            base = wall(policy, loads[0])
            print(f"| {policy} | {load} | {wall(policy, load):.1f} | {wall(policy, load) / base:.2f}x | "
                  f"{wall(policy, load) / wall(quiet, loads[0]):.2f}x |")
    if args.out:
        args.out.write_text(json.dumps({"task": args.task, "steps": args.steps, "data": args.data, "policies": POLICIES,
                                        "runs": {f"{p}|{n}": v for (p, n), v in runs.items()}}, indent=1))
    return 0


if __name__ == "__main__":
    from nas.cli import run_main

    sys.exit(run_main(main))
