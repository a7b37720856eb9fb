"""What is recorded on every trial, and how a stored trial becomes a row of ``trials.csv``.

Every backend stores the same user attributes on its Optuna trials, so outputs, export and
optuna-dashboard read any run the same way:

=================  =========================================================================
``status``          trained | pruned | over_budget | duplicate | failed | interrupted
                    (pruned: stopped early by ``--scheduler asha``; ``epochs`` says how far it got).
                    Over-budget samples end in state PRUNED, without values, for every sampler but
                    ``gp`` (``_samplers.keeps_values``)
``phase``           sampled -> training -> done (where a killed trial stopped; over-budget and
                    duplicate trials go from sampled to done)
``arch_id``         12-hex stable id of the decoded architecture
``model_config``    the architecture (reference layout, ``config.to_dict()``); ``model_family``
                    names its config class (``CvTConfig``, ``CCTConfig``)
``macs, params``    analytic costs at the deployment ``resolution`` and class count
``latency_ms``      measured (or predicted) latency, with ``latency_device`` and ``latency_iqr_ms``
``accuracy``        proxy top-1 % at the last epoch (``best_accuracy``, ``epochs``, ``history``)
``rung``            the rung it trained at (0: the first; ``rung_budget``: its multiple of the proxy's
                    budget); a promotion also has ``root`` (the architecture's first-rung trial)
                    and ``promoted_from`` (the trial it continued)
``screening``       true for a screening estimate (``--estimator supernet``'s inherited accuracy at rung 0,
                    ``rung_budget`` 0): it decides what is confirmed at the top rung and never enters the
                    front or the exports
``failure``         why a trial failed, one line
``duplicate_of``    an earlier trial that already trained this architecture
=================  =========================================================================

Constraint values (``trial.set_constraint``) are ``(cost - budget) / budget`` per budget: <= 0 is
within budget.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from ..metrics import ANALYTIC_COSTS, METRICS

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

__all__ = ["STATUSES", "PROMOTION_KEYS", "Cost", "objective_values", "values_from_attrs", "cost_attrs",
           "training_attrs", "training_recorded", "TRAINING_KEYS",
           "failure_reason", "trial_row", "read_trials_csv", "CSV_COLUMNS", "is_trained", "is_screening",
           "pareto_rows", "highest_rungs"]

STATUSES = ("trained", "pruned", "over_budget", "duplicate", "failed", "interrupted")

# What a promotion trial carries from the start (enqueued with it, and re-queued with it after a kill).
PROMOTION_KEYS = ("rung", "root", "promoted_from")

# What training_attrs records, in the order it is written (the last one marks a complete record).
TRAINING_KEYS = ("accuracy", "best_accuracy", "epochs", "history", "stopped_early", "train_wall_s",
                 "train_images_per_s")

CSV_COLUMNS = ("number", "state", "status", "arch_id", "rung", "rung_budget", "root", "screening", "accuracy",
               "best_accuracy", "macs", "params", "resolution", "latency_ms", "latency_iqr_ms", "latency_device",
               "feasible", "violation", "failure", "duplicate_of", "epochs", "train_wall_s", "wall_s", "worker",
               "threads", "started", "model_config")


@dataclass
class Cost:
    """What an architecture costs at the deployment setting, and by how much it exceeds each budget.

    ``values`` maps a cost metric's name (``nas.metrics``) to its raw value; latency is absent until measured.
    """

    arch_id: str
    resolution: int
    values: dict[str, float] = field(default_factory=dict)
    latency_iqr_ms: float | None = None
    latency_device: str | None = None  # the device it was measured on (or predicted for)
    latency_source: str | None = None  # "measured" or "predicted"
    violations: dict[str, float] = field(default_factory=dict)  # budget kind -> (cost - budget) / budget

    @property
    def feasible(self) -> bool:
        return all(v <= 0 for v in self.violations.values())


def objective_values(objectives: Iterable[str], measures: dict[str, float | None]) -> list[float]:
    """Objective values in order from raw ``measures`` by metric name, each in its metric's unit.

    An unmeasured value (an untrained candidate's accuracy, an unmeasured latency) is its metric's
    placeholder: samplers rank infeasible trials by their constraint violation, never by these.
    """
    out = []
    for name in objectives:
        m, value = METRICS[name], measures.get(name)
        out.append(m.placeholder() if value is None else float(value) * m.scale)
    return out


def values_from_attrs(objectives: Iterable[str], attrs: dict[str, Any]) -> list[float]:
    """The objective values of a trial whose outcome was recorded but never told (killed in between)."""
    return objective_values(objectives, {m.name: attrs.get(m.column) for m in METRICS.values()})


def cost_attrs(cost: Cost) -> dict[str, Any]:
    """User attributes describing an architecture's cost (set before any training)."""
    attrs = {"arch_id": cost.arch_id, **{m.column: cost.values[m.name] for m in ANALYTIC_COSTS},
             "resolution": cost.resolution}
    latency = cost.values.get("latency")
    if latency is not None:
        attrs.update(latency_ms=latency, latency_iqr_ms=cost.latency_iqr_ms,
                     latency_device=cost.latency_device, latency_source=cost.latency_source)
    return attrs


def training_recorded(attrs: dict[str, Any]) -> bool:
    """Whether every attribute :func:`training_attrs` writes is there: the result is stored, even if the trial
    was not marked done before a kill."""
    return all(key in attrs for key in TRAINING_KEYS)


def training_attrs(result: Any) -> dict[str, Any]:
    """User attributes from a :class:`nas.proxy.ProxyResult` (:data:`TRAINING_KEYS`, in that order)."""
    return {"accuracy": float(result.accuracy), "best_accuracy": float(result.best_accuracy),
            "epochs": int(result.epochs_completed), "history": [float(a) for a in _accuracies(result.history)],
            "stopped_early": bool(result.stopped_early), "train_wall_s": round(float(result.wall_time_s), 3),
            "train_images_per_s": round(float(result.train_images_per_s), 1)}


def _accuracies(history: Iterable[Any]) -> list[float]:
    # ProxyResult.history holds per-epoch accuracies, either as numbers or as mappings with "accuracy".
    return [h["accuracy"] if isinstance(h, dict) else h for h in history]


def failure_reason(err: BaseException) -> str:
    """One line for a failed trial: the exception type and its first message line."""
    from cvt import UserError

    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    name = type(err).__name__
    if isinstance(err, UserError) or name == "TrainingFailed":
        return text or name
    if isinstance(err, MemoryError) or "out of memory" in text.lower():
        return f"out of memory: {text}" if text else "out of memory"
    return f"{name}: {text}" if text else name


def is_trained(trial: "FrozenTrial") -> bool:
    """A finished trial whose own proxy training produced its accuracy."""
    return trial.state.name == "COMPLETE" and trial.user_attrs.get("status") == "trained"


def trial_row(trial: "FrozenTrial") -> dict[str, Any]:
    """A ``trials.csv`` row (plus ``param.*`` columns with the sampled values)."""
    attrs = trial.user_attrs
    constraints = trial.constraints
    violation = max(constraints.values()) if constraints else None
    status = attrs.get("status") or ("interrupted" if trial.state.name == "RUNNING" else trial.state.name.lower())
    wall = (trial.datetime_complete - trial.datetime_start).total_seconds() \
        if trial.datetime_complete and trial.datetime_start else None
    row = {
        "number": trial.number, "state": trial.state.name, "status": status, "arch_id": attrs.get("arch_id"),
        "rung": attrs.get("rung", 0), "rung_budget": attrs.get("rung_budget"), "root": attrs.get("root", trial.number),
        "screening": bool(attrs.get("screening", False)), "accuracy": attrs.get("accuracy"),
        "best_accuracy": attrs.get("best_accuracy"),
        "macs": attrs.get("macs"), "params": attrs.get("params"), "resolution": attrs.get("resolution"),
        "latency_ms": attrs.get("latency_ms"),
        "latency_iqr_ms": attrs.get("latency_iqr_ms"), "latency_device": attrs.get("latency_device"),
        "feasible": None if violation is None else violation <= 0, "violation": violation,
        "failure": attrs.get("failure"), "duplicate_of": attrs.get("duplicate_of"), "epochs": attrs.get("epochs"),
        "train_wall_s": attrs.get("train_wall_s"), "wall_s": None if wall is None else round(wall, 3),
        "worker": attrs.get("worker"), "threads": attrs.get("threads"),
        "started": trial.datetime_start.isoformat(timespec="seconds") if trial.datetime_start else None,
        "model_config": json.dumps(attrs["model_config"], separators=(",", ":")) if "model_config" in attrs else None,
    }
    row.update({f"param.{k}": v for k, v in sorted(trial.params.items())})
    return row


# trials.csv columns that are not text, by type (an empty cell is None); the rest stay strings.
_INT_COLUMNS = ("number", "rung", "root", "macs", "params", "resolution", "epochs", "worker", "threads",
                "duplicate_of")
_FLOAT_COLUMNS = ("rung_budget", "accuracy", "best_accuracy", "latency_ms", "latency_iqr_ms", "violation",
                  "train_wall_s", "wall_s")
_BOOL_COLUMNS = ("screening", "feasible")


def read_trials_csv(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a run's ``trials.csv`` typed as :func:`trial_row` makes them (numbers, flags, None for an empty
    cell or a column the run's version did not write), in trial order: what :func:`pareto_rows` reads, without
    the study's journal."""
    def typed(row: dict[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {c: None for c in CSV_COLUMNS}  # a run from before a column existed lacks it
        out.update((k, v if v != "" else None) for k, v in row.items())
        for cols, kind in ((_INT_COLUMNS, lambda v: int(float(v))), (_FLOAT_COLUMNS, float),
                           (_BOOL_COLUMNS, lambda v: v == "True")):
            for c in cols:
                if out.get(c) is not None:
                    out[c] = kind(out[c])
        return out

    with open(path, newline="") as f:
        return sorted((typed(r) for r in csv.DictReader(f)), key=lambda r: r["number"])


def highest_rungs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per trained, within-budget architecture: its highest rung's (the first trial there); screening
    estimates are left out (only what they picked and was trained counts)."""
    best: dict[str, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: r["number"]):
        if row["status"] != "trained" or row["feasible"] is False or is_screening(row):
            continue
        kept = best.get(row["arch_id"])
        if kept is None or (row.get("rung") or 0) > (kept.get("rung") or 0):
            best[row["arch_id"]] = row
    return sorted(best.values(), key=lambda r: r["number"])


def is_screening(row: dict[str, Any]) -> bool:
    """Whether a trial row (or a trials.csv row, where the flag reads "True") is a screening estimate."""
    value = row.get("screening")
    return value is True or str(value).lower() == "true"


def pareto_rows(rows: list[dict[str, Any]], objectives: Iterable[str]) -> list[dict[str, Any]]:
    """Non-dominated trained, within-budget rows, one per architecture at its highest rung; highest rung first,
    then most accurate (the first row is the search's pick).

    The search decides at the top rung: a row is dominated only by one at the same or a higher rung (an
    accuracy after less training never outranks one after more).
    """
    cols = [(METRICS[o].column, METRICS[o].sign) for o in objectives]
    pool = [row for row in highest_rungs(rows)
            if not any(row[c] is None or (isinstance(row[c], float) and math.isnan(row[c])) for c, _ in cols)]

    def score(row):
        return [sign * float(row[c]) for c, sign in cols]  # larger is better in every column

    def rung(row):
        return row.get("rung") or 0

    front = []
    for row in pool:
        s = score(row)
        dominated = any(rung(other) >= rung(row) and all(o >= m for o, m in zip(score(other), s))
                        and score(other) != s for other in pool)
        if not dominated:
            front.append(row)
    return sorted(front, key=lambda r: (-rung(r), -float(r["accuracy"]), r["number"]))
