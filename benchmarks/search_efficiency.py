"""Search efficiency: does a model-based sampler beat random search at the same number of proxy trainings?

For one space, budget, proxy and trial count, it runs ``nas.search`` with each sampler (default: random,
TPE, NSGA-II) from several seeds, then reads every run's ``trials.csv`` and reports

* the hypervolume of the (accuracy, MACs) front after each trained trial: the area that the trained,
  within-budget candidates dominate, between chance accuracy and the MAC budget (units: % x GMACs);
* the best within-budget proxy accuracy against wall time since the run started;

as a table (mean and standard deviation over seeds) and a two-panel plot. Each (sampler, seed) run keeps
its own run directory under ``--out-dir``: a finished run is read back, an interrupted one is resumed, so
the benchmark can be stopped at any time, and two processes given different ``--seeds`` can share the
work on one machine (a last call with every seed then only reports).

    python benchmarks/search_efficiency.py --quick --out-dir /tmp/efficiency          # smoke run, minutes
    python benchmarks/search_efficiency.py --out-dir runs/efficiency --threads 1 --seeds 0 1 2

With ``--oracle`` (a ranking-oracle file of the same space and budget) it also reports what a NAS user cares
about: the CPU-seconds of proxy training until the search's pick (what it would return at that moment) is within
0.5 points of the oracle's best in the band, and the final pick's oracle accuracy. Picks the oracle lacks are
trained with its reference recipe into ``--incumbents`` (resumable), so the comparison of random search, TPE,
TPE with promotion (``tpe+promotion``, the default estimator) and TPE on a weight-sharing supernet
(``tpe+supernet``: ``--supernet-trials`` scores, the best 3 confirmed at the top rung) uses one ground truth::

    python benchmarks/search_efficiency.py --space cvt --budget 4GFLOPs \
        --samplers random tpe tpe+promotion tpe+supernet --epochs 2 --train-subset 3000 --val-subset 1000 \
        --trials 20 --threads 1 --out-dir runs/oracle-efficiency \
        --oracle experiments/results/ranking-oracle/cvt-4gflops.json

A supernet search's compute counts its scores and confirmations; the supernet's own training, made once per space,
range and data and cached for every later search, is reported beside it.
"""
from __future__ import annotations

import json
import statistics
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence


import nas  # noqa: F401  (first of all: OpenMP's policy before torch loads, then the torchvision fix)
import cvt

from nas.cli import ArgumentParser, run_main
from nas.budget import parse_budget
from nas.search import SAMPLERS, SearchConfig, pareto_rows, read_trials_csv, run_search

QUICK = {"trials": 4, "proxy": {"epochs": 1, "train_subset": 256, "val_subset": 256, "width_mult": 0.25}}
DONE = "efficiency-run.json"  # written into a run directory once its search has finished
PROMOTION = "+promotion"  # a sampler name with this suffix searches with promotion (--rungs PROMOTION_RUNGS)
SUPERNET = "+supernet"  # ... or screens with a supernet, confirming its best at the top rung of PROMOTION_RUNGS
PROMOTION_RUNGS = "1,2,4"
WITHIN = 0.5  # points: a search "holds" the oracle's best once its pick is this close to it


def hypervolume(points: Sequence[tuple[float, float]], ref_accuracy: float, ref_macs: float) -> float:
    """Area dominated by (accuracy %, GMACs) points, accuracy maximised and MACs minimised, inside the box
    accuracy > ``ref_accuracy`` and MACs < ``ref_macs``."""
    inside = sorted((m, a) for a, m in points if a > ref_accuracy and m < ref_macs)
    area, best = 0.0, ref_accuracy
    # Sweep from the cheapest point: each point adds the strip between it and the next cheaper best.
    for i, (macs, acc) in enumerate(inside):
        best = max(best, acc)
        right = inside[i + 1][0] if i + 1 < len(inside) else ref_macs
        area += (right - macs) * (best - ref_accuracy)
    return area


def split_variant(variant: str) -> tuple[str, str]:
    """``"tpe+promotion"`` -> ``("tpe", "+promotion")``; the mode is ``""`` (one rung of the proxy), PROMOTION or
    SUPERNET."""
    for mode in (PROMOTION, SUPERNET):
        if variant.endswith(mode):
            return variant.removesuffix(mode), mode
    return variant, ""


def read_trials(run_dir: Path) -> list[dict[str, Any]]:
    return read_trials_csv(run_dir / "trials.csv")


def finish_order(rows: list[dict[str, Any]]) -> list[tuple[float, dict[str, Any]]]:
    """(seconds from the run's start to the trial's end, row) of its trained within-budget trials, by end time."""
    origin = min(datetime.fromisoformat(r["started"]) for r in rows if r["started"])
    return sorted((((datetime.fromisoformat(r["started"]) - origin).total_seconds() + r["wall_s"], r)
                   for r in rows if r["status"] == "trained" and r["feasible"]), key=lambda t: t[0])


def curves(rows: list[dict[str, Any]], ref_accuracy: float, ref_macs: float) -> dict[str, list[float]]:
    """Per trained trial, in order of completion: hypervolume so far, best accuracy so far, elapsed seconds.
    A supernet's scores are not trainings: only the trainings that confirm them count."""
    points: list[tuple[float, float]] = []
    out: dict[str, list[float]] = {"hypervolume": [], "best_accuracy": [], "elapsed_s": []}
    for end, r in finish_order(rows):
        if r["screening"]:
            continue
        points.append((r["accuracy"], r["macs"] / 1e9))
        out["hypervolume"].append(hypervolume(points, ref_accuracy, ref_macs))
        out["best_accuracy"].append(max(a for a, _ in points))
        out["elapsed_s"].append(end)
    out["sampled"] = [len(rows)]
    out["over_budget"] = [sum(r["status"] == "over_budget" for r in rows)]
    return out


def run_one(args: Any, run_dir: Path, variant: str, seed: int, proxy: dict[str, Any]) -> None:
    """Run (or resume) one variant's search into ``run_dir``, unless it has finished already."""
    if (run_dir / DONE).is_file():
        return
    sampler, mode = split_variant(variant)
    # Random search finds few candidates within a tight budget (4% of cvt13-nas at 4 GFLOPs): let it sample until
    # it has trained as many as the others.
    estimation = ({"estimator": "supernet", "trials": args.supernet_trials, "supernet_recipe": args.supernet_recipe}
                  if mode == SUPERNET else {"trials": args.trials, "max_untrained": 200 * args.trials})
    config = SearchConfig.create(space=args.space, budget=args.budget, objectives=("accuracy", "macs"),
                                 sampler=sampler, seed=seed, data=args.data, data_dir=args.data_dir, proxy=proxy,
                                 threads=args.threads, out=str(run_dir), rungs=PROMOTION_RUNGS if mode else "1",
                                 self_check=0, resume=(run_dir / "run.json").is_file(), **estimation)
    print(f"== {sampler}, seed {seed}: {run_dir}", flush=True)
    result = run_search(config)
    (run_dir / DONE).write_text(json.dumps({"stop_reason": result.stop_reason, "summary": result.summary}) + "\n")


def _mean_sd(values: Sequence[float], digits: int = 2) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}"


def report(results: dict[str, list[dict[str, list[float]]]], trials: int, plot: Path | None) -> None:
    print(f"\nAfter {trials} proxy trainings per run (mean ± sd over seeds)")
    print("| sampler | runs | trained per run | hypervolume (% x GMACs) | best accuracy % | sampled per run "
          "| over budget % | wall time per run (min) | hypervolume at half the trials |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for sampler, runs in results.items():
        final_hv = [r["hypervolume"][-1] for r in runs if r["hypervolume"]]
        half_hv = [r["hypervolume"][max(0, len(r["hypervolume"]) // 2 - 1)] for r in runs if r["hypervolume"]]
        best = [r["best_accuracy"][-1] for r in runs if r["best_accuracy"]]
        sampled = [r["sampled"][0] for r in runs]
        over = [100 * r["over_budget"][0] / r["sampled"][0] for r in runs if r["sampled"][0]]
        wall = [r["elapsed_s"][-1] / 60 for r in runs if r["elapsed_s"]]
        trained = [len(r["hypervolume"]) for r in runs]
        print(f"| {sampler} | {len(runs)} | {_mean_sd(trained, 0)} | {_mean_sd(final_hv)} | {_mean_sd(best)} | "
              f"{_mean_sd(sampled, 0)} | {_mean_sd(over, 0)} | {_mean_sd(wall, 1)} | {_mean_sd(half_hv)} |")
    if plot is not None:
        _plot(results, plot)
        print(f"\nplot: {plot}")


def _plot(results: dict[str, list[dict[str, list[float]]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax_hv, ax_time) = plt.subplots(1, 2, figsize=(11, 4.2))
    for (sampler, runs), color in zip(results.items(), ("tab:gray", "tab:blue", "tab:orange", "tab:green")):
        n = min(len(r["hypervolume"]) for r in runs)
        if n == 0:
            continue
        hv = np.array([r["hypervolume"][:n] for r in runs])
        x = np.arange(1, n + 1)
        ax_hv.plot(x, hv.mean(0), color=color, label=f"{sampler} (n={len(runs)})")
        ax_hv.fill_between(x, hv.min(0), hv.max(0), color=color, alpha=0.15)
        end = max(r["elapsed_s"][-1] for r in runs) / 60
        grid = np.linspace(0, end, 200)
        best = []
        for r in runs:  # step function: best accuracy known at each moment (nan before the first result)
            t = np.array(r["elapsed_s"]) / 60
            idx = np.searchsorted(t, grid, side="right") - 1
            best.append(np.where(idx >= 0, np.array(r["best_accuracy"])[np.clip(idx, 0, None)], np.nan))
        best = np.array(best)  # mean, min and max are drawn from the moment every seed has a result
        ax_time.plot(grid, best.mean(0), color=color, label=sampler)
        ax_time.fill_between(grid, best.min(0), best.max(0), color=color, alpha=0.15)
    ax_hv.set_xlabel("proxy trainings")
    ax_hv.set_ylabel("hypervolume of (accuracy, MACs) front")
    ax_hv.set_title("front quality per trial (mean, min-max over seeds)")
    ax_time.set_xlabel("wall time (min)")
    ax_time.set_ylabel("best within-budget proxy top-1 (%)")
    ax_time.set_title("best accuracy against time")
    for ax in (ax_hv, ax_time):
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def picks(run_dir: Path) -> list[tuple[float, dict[str, Any]]]:
    """(CPU-seconds of training so far, the search's pick then) after every training of a run, in the order they
    finished; the pick (a ``trials.csv`` row) is what the search would return at that moment (``pareto_rows``:
    the front's first row, highest rung first). A supernet's scores count as compute but pick nothing: its first
    pick is its first confirmation. Read from ``trials.csv`` and ``run.json`` alone."""
    config = SearchConfig.from_dict(json.loads((run_dir / "run.json").read_text())["config"])
    threads = config.training.threads or 1
    rows = read_trials(run_dir)
    done = finish_order(rows)
    out, cpu, seen = [], 0.0, set()
    for _, r in done:
        cpu += (r["train_wall_s"] or 0.0) * (r["threads"] or threads)
        seen.add(r["number"])
        if r["screening"]:
            continue
        # What the search knew then: the trainings finished so far, and every trial that trained nothing.
        known = [u for u in rows if u["number"] in seen or u["status"] != "trained"]
        out.append((cpu, pareto_rows(known, config.space.objective_names)[0]))
    return out


def oracle_efficiency(args: Any, runs: dict[str, list[Path]]) -> None:
    """Train every pick the oracle lacks (reference recipe, seed 0; resumable) and report the compute until each
    search held an architecture within ``WITHIN`` points of the oracle's best in the band."""
    import math

    from nas.data import load_dataset
    from nas.ranking import OracleSpec, OracleStore, Reference, oracle_truth, train_reference
    from search_spaces import get_space

    saved = OracleStore.read(args.oracle)
    spec = OracleSpec.from_identity(saved["settings"])
    if (spec.space, spec.budget_value) != (args.space, parse_budget(args.budget)):
        raise cvt.UserError(f"--oracle {args.oracle} measured space {spec.space} at {spec.budget}; run the searches "
                            f"with --space {spec.space} --budget {spec.budget.replace(' ', '')}")
    oracle = OracleStore(None, saved["settings"])
    oracle.merge(args.oracle)
    band = [a for a, r in oracle.architectures.items() if r["kind"] != "anchor"]
    truth = oracle_truth(oracle, band)
    target = max(v for v in truth.values() if math.isfinite(v))
    store = OracleStore.at(args.incumbents or args.out_dir / "incumbents.json", saved["settings"])
    config_cls = cvt.family_named(get_space(args.space).family).config_cls
    dataset = None

    def accuracy(pick: dict[str, Any]) -> float:
        nonlocal dataset
        arch = pick["arch_id"]
        if arch in truth:
            return truth[arch]
        ref = Reference(arch, "incumbent", f"pick of trial {pick['number']}",
                        config_cls.from_dict(json.loads(pick["model_config"])), pick["macs"], pick["params"])
        for path in args.reuse:
            if store.has(arch, 0):
                break
            store.reuse(path, [ref], 1)
        if not store.has(arch, 0) and not args.report_only:
            dataset = dataset or load_dataset(saved["settings"]["data"]["name"], args.data_dir)
            print(f"oracle training of a pick: {arch} ({ref.macs / 1e9:.2f} GMACs)", flush=True)
            store.add(ref, 0, train_reference(ref, 0, spec, dataset, threads=args.threads))
        return store.accuracy(arch, 0)

    print(f"\nCompute until the search holds an architecture within {WITHIN} points of the oracle's best in the band "
          f"({target:.2f}%; {args.oracle}), CPU-minutes of proxy training and supernet scoring (mean ± sd over the "
          f"runs that got there); a supernet's own training, once per space, range and data, in its column")
    print("| search | runs | held within 0.5 | CPU-min to hold | best pick on the way, oracle % | final pick, oracle % "
          "| regret (points) | CPU-min in all | supernet training (once) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for variant, dirs in runs.items():
        held, final, spent, on_way, supernets = [], [], [], [], set()
        for run_dir in dirs:
            supernets.add(supernet_training(run_dir))
            events = picks(run_dir)
            if not events:
                continue
            spent.append(events[-1][0] / 60)
            # Picks are judged in order until one holds (each distinct pick the oracle lacks costs a reference
            # training), then the final pick.
            final.append(accuracy(events[-1][1]))
            if args.finals_only:
                continue
            judged = []
            for cpu, pick in events:
                judged.append(accuracy(pick))
                if judged[-1] >= target - WITHIN:
                    held.append(cpu / 60)
                    break
            on_way.append(max(judged))  # the closest the run came (the first that held, where one did)
        finite = [a for a in final if math.isfinite(a)]
        holding = "-" if args.finals_only else f"{len(held)} of {len(final)}"
        print(f"| {variant} | {len(final)} | {holding} | {_mean_sd(held, 1)} | "
              f"{_mean_sd([a for a in on_way if math.isfinite(a)])} | {_mean_sd(finite)} | "
              f"{_mean_sd([target - a for a in finite])} | {_mean_sd(spent, 1)} | "
              f"{'; '.join(sorted(s for s in supernets if s)) or '-'} |")


def supernet_training(run_dir: Path) -> str:
    """What training the supernet of a supernet search took (from its cache entry), or ``""``."""
    about = json.loads((run_dir / "run.json").read_text()).get("estimator", {})
    path = Path(about["supernet"]) / "supernet.json" if "supernet" in about else None
    if path is None or not path.is_file():
        return f"not in this machine's cache ({about['supernet']})" if path else ""
    trained = json.loads(path.read_text())
    wall = (trained.get("trained_s") or 0.0) / 60
    threads = trained.get("threads")
    cpu = f"{wall * threads:.1f} CPU-min ({threads} thread(s))" if threads else "threads not recorded"
    return f"{path.parent.name}: {wall:.1f} min wall, {cpu} on {trained.get('device', 'cpu')}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="cvt13-nas", help="search space (default cvt13-nas)")
    parser.add_argument("--budget", default="4GFLOPs", help="MAC budget (default 4GFLOPs)")
    parser.add_argument("--trials", type=int, default=20, help="proxy trainings per run (default 20)")
    parser.add_argument("--samplers", nargs="+", default=["random", "tpe", "nsga2"],
                        help=f"samplers to compare; a name ending in {PROMOTION} searches with promotion (rungs "
                             f"{PROMOTION_RUNGS}), one ending in {SUPERNET} screens with a supernet, e.g. random tpe "
                             f"tpe{PROMOTION} tpe{SUPERNET}")
    parser.add_argument("--supernet-trials", type=int, default=None,
                        help=f"candidates a {SUPERNET} search scores (default: the search's --trials default with "
                             f"--estimator supernet)")
    parser.add_argument("--supernet-recipe", default="auto",
                        help=f"how a {SUPERNET} search's supernet is trained (the search's --supernet-recipe; "
                             f"default auto)")
    parser.add_argument("--oracle", type=Path, default=None,
                        help="a ranking-oracle file of the same space and budget: also report the compute until each "
                             "search held an architecture within 0.5 points of its best (picks it lacks are trained "
                             "with its recipe)")
    parser.add_argument("--finals-only", action="store_true",
                        help="with --oracle: train and judge only each run's final pick (its regret; the compute "
                             "until a pick held needs the earlier picks too, so that column stays empty)")
    parser.add_argument("--reuse", type=Path, nargs="+", default=[], metavar="JSON",
                        help="with --oracle: files of trainings with its recipe and data (a reference comparison, "
                             "say) to take a pick's training from instead of repeating it")
    parser.add_argument("--incumbents", type=Path, default=None,
                        help="where those trainings are kept (default OUT_DIR/incumbents.json; resumed)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds per sampler (default 0 1 2)")
    parser.add_argument("--data", default="cifar10", help="dataset (default cifar10)")
    parser.add_argument("--data-dir", default=None, help="data root (default $CVT_NAS_DATA)")
    parser.add_argument("--epochs", type=int, default=2, help="proxy epochs (default 2)")
    parser.add_argument("--train-subset", type=int, default=1000, help="proxy training images (default 1000)")
    parser.add_argument("--val-subset", type=int, default=500, help="proxy validation images (default 500)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per run (default: all)")
    parser.add_argument("--out-dir", type=Path, required=True, help="one run directory per (sampler, seed) here")
    parser.add_argument("--plot", type=Path, default=None, help="PNG to write (default OUT_DIR/efficiency.png)")
    parser.add_argument("--report-only", action="store_true", help="read finished runs; start none")
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK}")
    args = parser.parse_args(argv)
    proxy = {"epochs": args.epochs, "train_subset": args.train_subset, "val_subset": args.val_subset}
    if args.quick:
        args.trials, proxy = QUICK["trials"], QUICK["proxy"]
    budget = parse_budget(args.budget)
    if budget.kind != "macs":
        parser.error(f"--budget {args.budget!r} is not a MAC budget; give e.g. 4GFLOPs")

    unknown = [s for s in args.samplers if split_variant(s)[0] not in SAMPLERS]
    if unknown:
        parser.error(f"unknown sampler {unknown[0]!r}; use one of {', '.join(SAMPLERS)}, optionally with {PROMOTION} "
                     f"or {SUPERNET}")
    results: dict[str, list[dict[str, list[float]]]] = {s: [] for s in args.samplers}
    finished: dict[str, list[Path]] = {s: [] for s in args.samplers}
    for seed in args.seeds:  # seeds outermost: an interrupted benchmark has every sampler at equal footing
        for sampler in args.samplers:
            run_dir = args.out_dir / f"{sampler}-seed{seed}"
            if not args.report_only:
                run_one(args, run_dir, sampler, seed, proxy)
            if not (run_dir / DONE).is_file():
                print(f"not finished, left out: {run_dir}")
                continue
            finished[sampler].append(run_dir)
            # Chance accuracy is the reference: a candidate that learned nothing adds no volume.
            classes = json.loads((run_dir / "run.json").read_text()).get("dataset", {}).get("num_classes", 10)
            results[sampler].append(curves(read_trials(run_dir), 100.0 / classes, budget.value / 1e9))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "efficiency.json").write_text(json.dumps(
        {"space": args.space, "budget": args.budget, "trials": args.trials, "proxy": proxy, "runs": results},
        indent=1) + "\n")
    report({s: r for s, r in results.items() if r}, args.trials, args.plot or args.out_dir / "efficiency.png")
    if args.oracle is not None:
        oracle_efficiency(args, {s: d for s, d in finished.items() if d})
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
