"""Run-directory outputs: ``trials.csv``, ``pareto.csv``, ``pareto.png``, ``history.png`` (+ HTML).

Everything is derived from the study's trials (``_records.trial_row``), so the outputs can be rebuilt
at any time: ``--resume`` of a run that was killed before it wrote them writes them when it stops.
"""
from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Any, Sequence

from cvt import UserError

from .._paths import atomic_path
from ..metrics import COSTS, METRICS, by_column
from ._records import CSV_COLUMNS, is_screening, trial_row

__all__ = ["study_rows", "write_outputs"]

_log = logging.getLogger(__name__)

SCORED_LABEL = "scored (inherited accuracy, not trained)"  # a screening estimator's first rung



def study_rows(study: Any) -> list[dict[str, Any]]:
    """One row per trial (WAITING trials, i.e. queued and not started, are left out)."""
    return [trial_row(t) for t in study.get_trials(deepcopy=False) if t.state.name != "WAITING"]


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` to ``path`` whole or not at all: a full disk leaves the previous file as it was."""
    extra = sorted({k for r in rows for k in r} - set(CSV_COLUMNS))
    try:
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS) + extra)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: "" if v is None else v for k, v in row.items()})
    except OSError as err:
        raise UserError(f"cannot write {path} ({err.strerror or err}); the study in {path.parent} holds every "
                        f"result: free some space and rerun the search with --resume, which writes the outputs "
                        f"again") from None


def write_outputs(rows: list[dict[str, Any]], front: list[dict[str, Any]], run_dir: Path, objectives: Sequence[str],
                  budgets: dict[str, Any], resolution: int | None = None) -> dict[str, Path]:
    """Write the CSVs and plots of ``rows`` and their Pareto ``front`` (``pareto_rows``); returns name -> path."""
    run_dir = Path(run_dir)
    written = {"trials.csv": run_dir / "trials.csv", "pareto.csv": run_dir / "pareto.csv"}
    _write_csv(written["trials.csv"], rows)
    _write_csv(written["pareto.csv"], front)
    limits = {METRICS[k].column: float(b.value) * METRICS[k].budget_scale for k, b in budgets.items()}
    costs = [m.column for m in COSTS if any(r.get(m.column) is not None for r in rows)]
    if costs:
        written.update(_plot_png(rows, front, costs, limits, run_dir, resolution, objectives))
        written.update(_plot_html(rows, front, costs, limits, run_dir))
    return written


def _estimated(rows, screening: bool = False):
    """Rows with an accuracy: trained ones, or (``screening``) the screening estimator's scores."""
    return [r for r in rows if r["status"] == "trained" and r["accuracy"] is not None
            and is_screening(r) == screening]


def _points(rows, col):
    scale = by_column(col).scale
    trained, scored = ([(r[col] * scale, r["accuracy"], r["number"]) for r in _estimated(rows, screening)
                        if r.get(col) is not None] for screening in (False, True))
    over = [r[col] * scale for r in rows if r["status"] == "over_budget" and r.get(col) is not None
            and math.isfinite(r[col])]
    return trained, scored, over


def _label_axes(ax, xlabel: str, legend: str = "lower right") -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(METRICS["accuracy"].axis)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc=legend)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format=path.suffix.lstrip("."))
    plt.close(fig)


def _plot_png(rows, front, costs, limits, run_dir: Path, resolution, objectives) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(costs), figsize=(5 * len(costs), 4), squeeze=False)
    for ax, col in zip(axes[0], costs):
        label, scale = by_column(col).axis, by_column(col).scale
        trained, scored, over = _points(rows, col)
        # Zoom on the estimated candidates and the budget; samples far over budget are counted, not drawn.
        xs = [p[0] for p in trained + scored] + ([limits[col] * scale] if col in limits else [])
        span = (min(xs), max(xs)) if xs else None
        beyond = 0
        if span:
            pad = 0.08 * ((span[1] - span[0]) or span[1] or 1.0)
            span = (span[0] - pad, span[1] + pad)
            beyond = sum(not span[0] <= x <= span[1] for x in over)
            over = [x for x in over if span[0] <= x <= span[1]]
        if scored:
            ax.scatter([p[0] for p in scored], [p[1] for p in scored], s=6, c="tab:green", alpha=0.4,
                       label=SCORED_LABEL)
        if trained:
            ax.scatter([p[0] for p in trained], [p[1] for p in trained], s=18, c="0.6", label="trained")
        pts = sorted((r[col] * scale, r["accuracy"], r["number"]) for r in front if r.get(col) is not None)
        if pts:
            # A line only where the front lives in this plane: accuracy against this one cost.
            style = "o-" if tuple(objectives) == ("accuracy", by_column(col).name) else "o"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, c="tab:red", ms=5, label="Pareto front")
            for x, y, n in pts:
                ax.annotate(f"t{n}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
        if over or beyond:  # never trained, so no accuracy: shown as ticks under the axis
            more = f", {beyond} more off the axis" if beyond else ""
            ax.plot(over, [0.0] * len(over), "|", c="tab:blue", ms=10, transform=ax.get_xaxis_transform(),
                    label=f"over budget (not trained){more}")
        if col in limits:
            ax.axvline(limits[col] * scale, ls="--", c="k", lw=1, label="budget")
        if span:
            ax.set_xlim(*span)
        where = f" at {resolution}x{resolution}" if resolution and by_column(col).at_resolution else ""
        _label_axes(ax, label + where)
    _save(fig, run_dir / "pareto.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    scored = [(r["number"], r["accuracy"]) for r in _estimated(rows, screening=True)]
    if scored:
        ax.scatter(*zip(*scored), s=6, c="tab:green", alpha=0.4, label=SCORED_LABEL)
    trained = [(r["number"], r["accuracy"]) for r in _estimated(rows)]
    if trained:
        ax.scatter(*zip(*trained), s=18, c="0.5", label="trained trial")
        best, line = -math.inf, []
        for n, a in trained:
            best = max(best, a)
            line.append((n, best))
        ax.step(*zip(*line), where="post", c="tab:red", label="best so far")
    for status, marker, color in (("over_budget", "|", "tab:blue"), ("failed", "x", "tab:orange")):
        numbers = [r["number"] for r in rows if r["status"] == status]
        if numbers:  # no accuracy: marked under the axis
            ax.plot(numbers, [0.0] * len(numbers), marker, c=color, ms=8, transform=ax.get_xaxis_transform(),
                    label=status.replace("_", " ") + (" (not trained)" if status == "over_budget" else ""))
    _label_axes(ax, "trial number", legend="best")
    _save(fig, run_dir / "history.png")
    return {"pareto.png": run_dir / "pareto.png", "history.png": run_dir / "history.png"}


def _plot_html(rows, front, costs, limits, run_dir: Path) -> dict[str, Path]:
    try:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots
    except ImportError:  # plotly is optional (the "plot" extra)
        return {}
    fig = make_subplots(rows=1, cols=len(costs), shared_yaxes=True)
    on_front = {r["number"] for r in front}
    for i, col in enumerate(costs, start=1):
        label, scale = by_column(col).axis, by_column(col).scale
        trained = [r for r in _estimated(rows) if r.get(col) is not None]
        scored = [r for r in _estimated(rows, screening=True) if r.get(col) is not None]
        for name, subset, color in ((SCORED_LABEL, scored, "green"),
                                    ("trained", [r for r in trained if r["number"] not in on_front], "gray"),
                                    ("Pareto front", [r for r in trained if r["number"] in on_front], "red")):
            if not subset and name == SCORED_LABEL:
                continue
            fig.add_trace(go.Scatter(
                x=[r[col] * scale for r in subset], y=[r["accuracy"] for r in subset], mode="markers",
                marker={"color": color}, name=name, legendgroup=name, showlegend=i == 1,
                text=[f"trial {r['number']} ({r['arch_id']})" for r in subset]), row=1, col=i)
        if col in limits:
            fig.add_vline(x=limits[col] * scale, line_dash="dash", row=1, col=i)
        fig.update_xaxes(title_text=label, row=1, col=i)
    fig.update_yaxes(title_text=METRICS["accuracy"].axis, row=1, col=1)
    # One shared copy of plotly.js next to the pages: they open offline.
    with atomic_path(run_dir / "pareto.html") as tmp:
        fig.write_html(tmp, include_plotlyjs="directory")
    hist = go.Figure()
    for name, subset in (("trained trial", _estimated(rows)), (SCORED_LABEL, _estimated(rows, screening=True))):
        if subset:
            hist.add_trace(go.Scatter(x=[r["number"] for r in subset], y=[r["accuracy"] for r in subset],
                                      mode="markers", name=name))
    hist.update_layout(xaxis_title="trial number", yaxis_title=METRICS["accuracy"].axis)
    with atomic_path(run_dir / "history.html") as tmp:
        hist.write_html(tmp, include_plotlyjs="directory")
    return {"pareto.html": run_dir / "pareto.html", "history.html": run_dir / "history.html"}
