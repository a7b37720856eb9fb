"""Reference results: what a search picks, against CvT-13, CvT-13 shrunk to fit and random members, all trained
with the ranking oracle's reference recipe under several seeds.

For one space and budget it trains: the top ``--top`` architectures of each search run given (each at its highest
rung, the most accurate first: the order the search prints its best and the self-check uses), the space's
reference member narrowed uniformly in width until it fits (the hand-made baseline), the same member as it is
(CvT-13, over a budget below its 4.57 GMACs: the anchor), and ``--random`` members drawn uniformly from the space
within the budget; each with ``nas.ranking.REFERENCE_RECIPE`` (``--recipe gpu`` for the GPU edition) under seeds
0..``--seeds``-1. Results go to ``--out`` after every training; rerunning skips what is done, and shard processes
may share one ``--out`` (each save takes what the others saved). With nothing left to train it prints the table
and whether the search's pick beat each baseline by more than the seed noise, and ``--plot`` draws accuracy
against MACs.

    python benchmarks/reference_comparison.py --budget 4GFLOPs --runs runs/cvt-4gflops --threads 1 \\
        --shard 0/2 --out cvt-4gflops.json &                                       # two cores, one file
    python benchmarks/reference_comparison.py --budget 4GFLOPs --runs runs/cvt-4gflops --threads 1 \\
        --shard 1/2 --out cvt-4gflops.json; wait
    python benchmarks/reference_comparison.py --budget 4GFLOPs --runs runs/cvt-4gflops --out cvt-4gflops.json \\
        --report --plot cvt-4gflops.png
"""
from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path
from typing import Sequence

import nas  # noqa: F401  (first of all: OpenMP's policy before torch loads, then the torchvision fix)
import cvt
from cvt import UserError
from nas.cli import ArgumentParser, add_job_options, run_main, train_references
from nas.data import load_dataset
from nas.ranking import RECIPES, OracleSpec, OracleStore, Reference, pending, reference_architectures, shard_jobs

QUICK = {"epochs": 1, "train_subset": 256, "val_subset": 128, "width_mult": 0.25}
SEARCH = "search"


def search_picks(run_dirs: Sequence[Path], space: str, top: int) -> list[Reference]:
    """The top ``top`` architectures of each run, labelled ``<run directory name> #k``: read from its ``trials.csv``
    (the study's journal of a supernet search is too large to commit), trained within budget, each at its highest
    rung, the highest rungs first, then the most accurate (the order of ``nas.search.select_trials(top=...)``).

    Raises:
        UserError: a run of another space, or one with nothing trained.
    """
    import json

    from nas.search import read_trials_csv
    from search_spaces import get_space

    config_cls = cvt.family_named(get_space(space).family).config_cls
    picks = []
    for run_dir in run_dirs:
        searched = json.loads(_run_file(run_dir, "run.json").read_text())["config"]["space"]["space"]
        if searched != space:
            raise UserError(f"{run_dir} searched space {searched}; compare it with --space {searched}")
        rows = [r for r in read_trials_csv(_run_file(run_dir, "trials.csv"))
                if r["status"] == "trained" and r["feasible"] and not r["screening"]]
        if not rows:
            raise UserError(f"{run_dir} has no architecture trained within budget; run or resume the search first")
        best: dict[str, dict] = {}
        for r in sorted(rows, key=lambda r: (-(r["rung"] or 0), -r["accuracy"], r["number"])):
            best.setdefault(r["arch_id"], r)
        for k, r in enumerate(list(best.values())[:top], 1):
            picks.append(Reference(r["arch_id"], SEARCH, f"{Path(run_dir).name} #{k}",
                                   config_cls.from_dict(json.loads(r["model_config"])), r["macs"], r["params"]))
    return picks


def search_run(ref: Reference) -> str:
    """The run a search pick came from (picks are named ``"<run> #<rank>"``)."""
    return ref.name.rsplit(" #", 1)[0]


def _run_file(run_dir: Path, name: str) -> Path:
    path = Path(run_dir) / name
    if not path.is_file():
        raise UserError(f"{run_dir} is not a search run directory ({name} is missing); give the --out of nas.search")
    return path


def comparison_set(spec: OracleSpec, run_dirs: Sequence[Path], top: int) -> list[Reference]:
    """The search's picks, then the random members, the baseline shrunk to fit and the anchor (each architecture
    once: a pick that is also a random member keeps its search label)."""
    seen, refs = set(), []
    for ref in search_picks(run_dirs, spec.space, top) + reference_architectures(spec):
        if ref.arch_id not in seen:
            seen.add(ref.arch_id)
            refs.append(ref)
    return refs


def seed_noise(store: OracleStore, refs: Sequence[Reference], seeds: int) -> tuple[float, int]:
    """The standard deviation of one training's accuracy from seed to seed (pooled over every architecture
    trained under more than one seed), and the degrees of freedom behind it."""
    ss, dof = 0.0, 0
    for r in refs:
        accs = [store.accuracy(r.arch_id, s) for s in range(seeds) if store.has(r.arch_id, s)]
        accs = [a for a in accs if math.isfinite(a)]
        if len(accs) > 1:
            mean = statistics.fmean(accs)
            ss += sum((a - mean) ** 2 for a in accs)
            dof += len(accs) - 1
    return (math.sqrt(ss / dof) if dof else math.nan), dof


def mean_accuracy(store: OracleStore, ref: Reference, seeds: int) -> tuple[float, list[float]]:
    accs = [store.accuracy(ref.arch_id, s) for s in range(seeds) if store.has(ref.arch_id, s)]
    finite = [a for a in accs if math.isfinite(a)]
    return (statistics.fmean(finite) if finite else math.nan), accs


def compare(pick: tuple[float, int], other: tuple[float, int], noise: float) -> tuple[float, float, str]:
    """(difference, margin, word) of two means of ``n`` seeds each: "beats" when the pick leads by more than two
    standard deviations of the difference, "loses to" when it trails by as much, "ties with" otherwise."""
    (a, n), (b, m) = pick, other
    margin = 2 * noise * math.sqrt(1 / n + 1 / m) if n and m else math.nan
    diff = a - b
    if not math.isfinite(diff) or not math.isfinite(margin):
        return diff, margin, "not measured against"
    return diff, margin, "beats" if diff > margin else "loses to" if diff < -margin else "ties with"


def print_report(store: OracleStore, refs: Sequence[Reference], seeds: int, budget: str) -> list[str]:
    """The table, then one line per search run comparing its pick with each baseline; returns those lines."""
    print("\n| architecture | kind | GMACs | params (M) | depths | widths | "
          + " | ".join(f"seed {s} %" for s in range(seeds)) + " | mean % |")
    print("|---|---|---:|---:|---|---|" + "---:|" * (seeds + 1))
    means = {}
    for r in refs:
        mean, accs = mean_accuracy(store, r, seeds)
        means[r.arch_id] = (mean, sum(math.isfinite(a) for a in accs))
        cells = " | ".join(f"{store.accuracy(r.arch_id, s):.2f}" if store.has(r.arch_id, s) else ""
                           for s in range(seeds))
        print(f"| {r.name} `{r.arch_id}` | {r.kind} | {r.macs / 1e9:.2f} | {r.params / 1e6:.2f} | "
              f"{'/'.join(map(str, r.config.depths))} | {'/'.join(map(str, r.config.embed_dims))} | {cells} | "
              f"{mean:.2f} |")
    noise, dof = seed_noise(store, refs, seeds)
    print(f"\nseed noise: {noise:.2f} points per training (pooled over {dof} degree(s) of freedom); a difference "
          f"counts when it exceeds two standard deviations of the difference of the two means")
    randoms = [r for r in refs if r.kind == "sampled" and math.isfinite(means[r.arch_id][0])]
    best_random = max(randoms, key=lambda r: means[r.arch_id][0], default=None)
    baselines = [r for r in refs if r.kind in ("shrunk", "anchor")]
    if best_random is not None:
        baselines.append(best_random)
    def verdict(pick: Reference) -> str:
        parts = []
        for base in baselines:
            diff, margin, word = compare(means[pick.arch_id], means[base.arch_id], noise)
            what = f"the best random member ({base.name})" if base is best_random else base.name
            parts.append(f"{word} {what} ({diff:+.2f} points, margin {margin:.2f}; {pick.macs / base.macs:.0%} of "
                         f"its MACs)")
        return f"({means[pick.arch_id][0]:.2f}%, {pick.macs / 1e9:.2f} GMACs) " + "; ".join(parts)

    lines = []
    for run in sorted({search_run(r) for r in refs if r.kind == SEARCH}):
        picks = [r for r in refs if r.kind == SEARCH and search_run(r) == run]
        lines.append(f"{run} at {budget}: its pick {verdict(picks[0])}")
        best = max((r for r in picks if math.isfinite(means[r.arch_id][0])), key=lambda r: means[r.arch_id][0])
        if best is not picks[0]:  # what a user who trains the top few and keeps the best would get
            lines.append(f"{run} at {budget}: the best of its top {len(picks)}, {best.name} (chosen on these "
                         f"trainings, so optimistic): {verdict(best)}")
    for line in lines:
        print(line)
    return lines


def plot(store: OracleStore, refs: Sequence[Reference], seeds: int, path: Path, title: str) -> None:
    """Accuracy (mean, with the seeds' range) against GMACs, one marker per kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    names = {r.kind: r.name for r in reversed(refs)}  # a baseline's own name (the first of its kind)
    # One series per search run (a pick is named "<run> #<rank>"), then one per baseline kind.
    runs = list(dict.fromkeys(search_run(r) for r in refs if r.kind == SEARCH))
    series = [(run, lambda r, run=run: r.kind == SEARCH and search_run(r) == run, "o", color)
              for run, color in zip(runs, ("tab:blue", "tab:green", "tab:purple", "tab:cyan", "tab:olive"))]
    series += [(label, lambda r, kind=kind: r.kind == kind, marker, color) for kind, marker, color, label in (
        ("sampled", "x", "tab:gray", "random member"), ("shrunk", "s", "tab:orange", names.get("shrunk")),
        ("anchor", "D", "tab:red", names.get("anchor")))]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for label, member, marker, color in series:
        xs, ys, lo, hi = [], [], [], []
        for r in refs:
            mean, accs = mean_accuracy(store, r, seeds)
            finite = [a for a in accs if math.isfinite(a)]
            if not member(r) or not finite:
                continue
            xs.append(r.macs / 1e9)
            ys.append(mean)
            lo.append(mean - min(finite))
            hi.append(max(finite) - mean)
        if xs:
            ax.errorbar(xs, ys, yerr=[lo, hi], fmt=marker, color=color, label=label, capsize=3)
    ax.set_xscale("log")  # CvT-13 sits far right of a small budget's members
    for axis in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
        axis(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}"))
    ax.set_xlabel("GMACs at 224x224 (log scale)")
    ax.set_ylabel(f"top-1 %, reference recipe (mean of {seeds} seeds, bars: range)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="cvt", help="search space (default cvt)")
    parser.add_argument("--budget", default="4GFLOPs", help="MACs or params budget (default 4GFLOPs)")
    parser.add_argument("--runs", type=Path, nargs="*", default=[], metavar="RUN_DIR",
                        help="search run directories of this space and budget (their top architectures are trained)")
    parser.add_argument("--top", type=int, default=3, help="architectures per run (default 3)")
    parser.add_argument("--random", type=int, default=5, help="random members within the budget (default 5)")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per architecture (default 2)")
    parser.add_argument("--sample-seed", type=int, default=0, help="seed of the random members (default 0)")
    parser.add_argument("--recipe", choices=tuple(RECIPES), default="cpu",
                        help="the reference recipe (nas.ranking.RECIPES); each edition is its own file")
    add_job_options(parser, "comparison results")
    parser.add_argument("--reuse", type=Path, nargs="+", default=[], metavar="JSON",
                        help="ranking-oracle files of the same recipe and data: trainings of this comparison's "
                             "architectures found there are taken, not repeated")
    parser.add_argument("--report", action="store_true", help="print the table only; train nothing")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of accuracy against MACs")
    parser.add_argument("--quick", action="store_true", help=f"smoke run: recipe {QUICK}")
    args = parser.parse_args(argv)
    for name in ("top", "random", "seeds"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} {getattr(args, name)}: give a positive count")
    recipe = RECIPES[args.recipe]
    spec = OracleSpec(space=args.space, budget=args.budget, band=(0.0, 1.0), sample_seed=args.sample_seed,
                      members=args.random, seeds=args.seeds, noise_members=args.random,
                      recipe=recipe.replace(**QUICK) if args.quick else recipe)
    dataset = load_dataset(args.data, args.data_dir)
    for warning in dataset.description["warnings"]:
        print(f"WARNING: {warning}", flush=True)
    refs = comparison_set(spec, args.runs, args.top)
    store = OracleStore.open(args.out, spec, dataset)
    for path in args.merge:
        print(f"merging {store.merge(path)} result(s) from {path}")
    if args.merge:
        store.save()
    for path in args.reuse:
        print(f"reused {store.reuse(path, refs, args.seeds)} result(s) from {path}")
    work = [(r, s) for s in range(args.seeds) for r in refs]  # seed 0 of everything first: a partial table reads
    work = [] if args.report else pending(store, shard_jobs(work, spec, dataset, *args.shard))
    print(f"comparison: {spec.space} at {spec.budget_value}, {len(refs)} architectures x {args.seeds} seeds; recipe "
          f"{store.identity['recipe']}; {len(work)} training(s) left in shard {args.shard[0]}/{args.shard[1]}",
          flush=True)
    train_references(store, work, spec, dataset, device=args.device, threads=args.threads)
    print_report(store, refs, args.seeds, str(spec.budget_value))
    if args.plot is not None:
        plot(store, refs, args.seeds, args.plot, f"{spec.space} within {spec.budget_value}: reference recipe")
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
