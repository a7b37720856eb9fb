"""The self-check at the end of a search: does the pick hold under another seed, against a baseline?

The search's top K within-budget architectures (highest rung first, then accuracy) and a baseline (the space's
reference member, or ``--baseline``, narrowed until it meets every budget) are trained again at the top rung
under the next seed. From those trainings it says, in one plain sentence, whether the winner beats the baseline
by more than the noise, whether the top K can be told apart at all, and how far the search's order survives
(Kendall tau). The noise is measured in the same run: the seed-to-seed spread of the top K (the search's
accuracy and the retrained one of each), or the evaluation's binomial noise on its validation images when that
is larger. Results go to ``RUN_DIR/self_check.json`` after every training, so a killed check resumes.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any, Sequence

from cvt import UserError

from .._paths import atomic_path
from ._config import SearchConfig
from ._parallel import side_by_side, train_job, train_side_by_side
from ._records import highest_rungs
from ._rundir import CHECKPOINTS

__all__ = ["SELF_CHECK", "default_k", "resolve_baseline", "run_self_check", "verdict"]

_log = logging.getLogger("nas.search")

SELF_CHECK = "self_check.json"
MAX_K = 3
SHARE = 0.5  # the check may add at most this share of the search's compute when K is left to its default


def default_k(config: SearchConfig, trains: bool = True) -> int:
    """``--self-check K``, or when not given: up to 3 architectures, as many as keep the check (K of them and the
    baseline, each a top-rung training from scratch) within half of the search's compute; 0 when not even one
    fits, or when the estimator does not train (``trains`` False: a score at initialisation has nothing to
    retrain)."""
    if config.promotion.self_check is not None:
        return config.promotion.self_check
    if not trains:
        return 0
    promotion = config.promotion
    search = promotion.compute(config.sampling.trials)
    per_training = promotion.rungs[-1]
    return max(0, min(MAX_K, math.floor(SHARE * search / per_training) - 1))


def resolve_baseline(config: SearchConfig, space: Any, evaluator: Any) -> tuple[str, Any]:
    """(name, config) of the baseline, narrowed in width until it meets every budget.

    Raises:
        UserError: an unknown preset or unreadable YAML, or a baseline over a budget even at its narrowest.
    """
    import cvt

    from nas.cost import shrink_to_fit

    name = config.promotion.baseline or space.reference
    option = "--baseline" if config.promotion.baseline else f"space {space.name}'s reference"
    try:
        base = cvt.load_config(name) if name.endswith((".yaml", ".yml")) else cvt.preset(name)
    except UserError as err:
        raise UserError(f"{option} {name}: {err}") from None
    fitted = shrink_to_fit(base, lambda c: evaluator.cost(c).feasible)
    if fitted is None:
        budgets = ", ".join(str(b) for b in config.space.budgets.values())
        raise UserError(f"{option} {name} exceeds the budget ({budgets}) even at its narrowest widths; give a "
                        f"smaller --baseline (a preset or model YAML) or --self-check 0")
    return (name if fitted is base else f"{name} shrunk to fit"), fitted


def verdict(entries: Sequence[dict[str, Any]], *, rung: int, val_images: int | None = None) -> dict[str, Any]:
    """The plain verdict from the check's trainings.

    Args:
        entries: the top K first (the search's order, each with ``search_accuracy`` at its ``rung`` and
            ``check_accuracy`` in percent, ``macs``, ``number``), then the baseline (``label`` "baseline",
            ``check_accuracy``, ``macs``, ``name``).
        rung: the rung the check trained at (only entries the search trained there give seed pairs).
        val_images: validation images behind each accuracy (for the evaluation's binomial noise).

    Returns:
        ``text`` (one or two sentences), ``holds`` (True, False, or None within noise), ``margin`` (points a
        difference must exceed), ``noise`` (per-training standard deviation, points), ``tau`` (search order
        against the retrained order of the top K; None for fewer than 2), ``difference`` (winner minus baseline).
    """
    from nas.ranking import kendall_tau

    top = [e for e in entries if e["label"] != "baseline"]
    base = next((e for e in entries if e["label"] == "baseline"), None)
    if not top or base is None:
        raise ValueError("a verdict needs the top architectures and the baseline")
    # Seed pairs: an architecture the search trained at the check's rung, trained again under the next seed.
    pairs = [e["check_accuracy"] - e["search_accuracy"] for e in top if e["rung"] == rung]
    seed_noise = math.sqrt(sum(d * d for d in pairs) / (2 * len(pairs))) if pairs else 0.0
    p = sum(e["check_accuracy"] for e in entries) / len(entries) / 100
    eval_noise = 100 * math.sqrt(p * (1 - p) / val_images) if val_images else 0.0
    noise = max(seed_noise, eval_noise)
    margin = 2 * math.sqrt(2) * noise  # two standard deviations of a difference of two trainings
    winner = top[0]
    difference = winner["check_accuracy"] - base["check_accuracy"]
    share = winner["macs"] / base["macs"]
    if difference > margin:
        holds, text = True, (f"the winner holds: {difference:+.1f} points over the baseline ({base['name']}) at "
                             f"{share:.0%} of its MACs")
    elif difference < -margin:
        holds, text = False, (f"the pick does not hold: the baseline ({base['name']}) beats the winner by "
                              f"{-difference:.1f} points under another seed")
    else:
        cheaper = "the winner" if share <= 1 else "the baseline"
        holds, text = None, (f"the winner and the baseline ({base['name']}) are within noise ({difference:+.1f} "
                             f"points, noise +-{margin:.1f}): prefer the cheaper ({cheaper}, "
                             f"{min(share, 1 / share):.0%} of the other's MACs)")
    tau = None
    if len(top) >= 3:  # the search's order is the entries' order
        tau = kendall_tau({e["number"]: -i for i, e in enumerate(top)},
                          {e["number"]: e["check_accuracy"] for e in top})[0]
    if len(top) >= 2:
        checked = [e["check_accuracy"] for e in top]
        if max(checked) - min(checked) <= margin:
            cheapest = min(top, key=lambda e: e["macs"])
            text += (f"; the top {len(top)} are within noise of each other: pick by cost (the cheapest is trial "
                     f"{cheapest['number']}, {cheapest['macs'] / 1e9:.3g} GMACs)")
        elif tau is not None:
            text += f"; the search's order of its top {len(top)} holds with Kendall tau {tau:+.2f}"
        else:
            text += "; the search's top 2 keep their order" if checked[0] >= checked[1] else \
                "; the search's top 2 swap places"
    if not pairs:
        text += " (noise from the evaluation alone: no top architecture was trained at the top rung)"
    return {"text": text, "holds": holds, "difference": difference, "margin": margin, "noise": noise, "tau": tau}


def run_self_check(config: SearchConfig, run_dir: Path, rows: list[dict[str, Any]], evaluator: Any,
                   baseline: tuple[str, Any], k: int) -> dict[str, Any] | None:
    """Train the top ``k`` architectures of ``rows`` (``trials.csv`` rows) and ``baseline`` at the top rung under
    the next seed, resuming ``self_check.json``; the record with its verdict (None when nothing was trained)."""
    ranked = sorted(highest_rungs(rows), key=lambda r: (-(r.get("rung") or 0), -float(r["accuracy"]),
                                                        r["number"]))[:k]
    if not ranked:
        return None
    seed = config.sampling.seed + 1
    top_rung = len(config.promotion.rungs) - 1
    name, base_config = baseline
    plan = [{"label": f"#{i}", "number": r["number"], "arch_id": r["arch_id"], "macs": r["macs"],
             "rung": r.get("rung") or 0, "search_accuracy": float(r["accuracy"]),
             "config": json.loads(r["model_config"])} for i, r in enumerate(ranked, 1)]
    plan.append({"label": "baseline", "name": name, "arch_id": base_config.arch_id(),
                 "macs": evaluator.cost(base_config).values["macs"], "config": base_config.to_dict()})
    path = run_dir / SELF_CHECK
    record = {"seed": seed, "rung": top_rung, "rungs": list(config.promotion.rungs), "entries": plan}
    done = _load(path, record)
    todo = []
    for entry in plan:
        if entry["arch_id"] in done:
            entry.update({k: done[entry["arch_id"]][k] for k in ("check_accuracy", "seconds")})
        else:
            todo.append(entry)
    jobs = [{"family": evaluator.space.family, "model": e["config"], "rung": top_rung, "seed": seed,
             "directory": str(run_dir / CHECKPOINTS / "self-check" / e["arch_id"])}
            for e in todo]
    processes = side_by_side(config, len(todo))
    for entry in todo:
        _log.info("self-check: training %s (%s) at %dx the proxy budget under seed %d%s", entry["label"],
                  entry["arch_id"], config.promotion.rungs[top_rung], seed,
                  f" ({processes} side by side)" if processes > 1 else "")
    if processes > 1:
        finished = train_side_by_side(config, run_dir, jobs, processes=processes, resolution=evaluator.resolution)
    else:
        finished = ((i, train_job(evaluator, job)) for i, job in enumerate(jobs))
    for i, result in finished:
        todo[i].update(check_accuracy=result["accuracy"], seconds=round(result["wall_time_s"], 1))
        _save(path, record)
    available = len(evaluator.dataset.val_y)
    val_images = min(config.promotion.schedule.settings(evaluator.proxy_config(), top_rung).val_subset or available,
                     available)
    record["verdict"] = verdict(plan, rung=top_rung, val_images=val_images)
    _save(path, record)
    shutil.rmtree(run_dir / CHECKPOINTS / "self-check", ignore_errors=True)  # done: nothing continues them
    return record


def _load(path: Path, record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Entries already trained by an earlier (killed) check of the same plan, by architecture."""
    if not path.exists():
        return {}
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if (saved.get("seed"), saved.get("rung"), saved.get("rungs")) != (record["seed"], record["rung"],
                                                                        record["rungs"]):
        return {}
    return {e["arch_id"]: e for e in saved.get("entries", []) if "check_accuracy" in e}


def _save(path: Path, record: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1, default=str) + "\n")
