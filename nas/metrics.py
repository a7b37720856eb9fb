"""The metrics a search optimises and constrains, each declared once.

A :class:`Metric` says everything the rest of the engine needs: its objective name and direction, the
trial attribute (and ``trials.csv`` column) that holds it, the unit it is shown and handed to samplers
in, its budget (option, kind, unit conversion), the plot axis label, the export header line, and, for
costs that follow from the architecture alone, the function that computes them. Their order in
:data:`METRICS` is the order of plots and export header lines. Objectives, constraints,
records, CSV, plots, Pareto rows, budget checks and exports all read :data:`METRICS`.

Adding a metric: one :class:`Metric` entry below, plus the function that computes it (an analytic
``compute``, or a measurement in :meth:`nas.search.Evaluator.cost` as latency has).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

__all__ = ["Metric", "METRICS", "COSTS", "ANALYTIC_COSTS", "metric", "by_column"]


def _macs(config: Any, resolution: int, num_classes: int) -> int:
    from .cost import analytic_macs

    return int(analytic_macs(config, resolution, num_classes=num_classes))


def _params(config: Any, resolution: int, num_classes: int) -> int:
    from .cost import analytic_params

    return int(analytic_params(config, num_classes=num_classes))


def _macs_line(p: Mapping[str, Any]) -> str:
    res = p["resolution"]
    return (f"MACs: {p['macs'] / 1e9:.4f} G at {res}x{res}, {p['num_classes']} classes "
            f"(conv + linear + attention matmuls: the CvT paper's FLOPs)")


def _params_line(p: Mapping[str, Any]) -> str:
    return f"params: {p['params'] / 1e6:.4f} M ({p['params']:,}) with {p['num_classes']} classes"


def _latency_line(p: Mapping[str, Any]) -> str:
    lat, res = p["latency"], p["resolution"]
    if not lat:
        return "latency: not measured (no latency budget or objective)"
    iqr = "" if lat["iqr_ms"] is None else f" (IQR {lat['iqr_ms']:.3f})"
    return (f"latency: {lat['ms']:.3f} ms{iqr} {lat['source']} on {lat['device']}, batch {lat['batch_size']}, "
            f"{lat['dtype']}, {res}x{res}")


@dataclass(frozen=True)
class Metric:
    """One metric.

    Attributes:
        name: the objective name (``--objectives accuracy,macs``).
        column: the trial attribute and ``trials.csv`` column holding the raw value.
        direction: ``"maximize"`` or ``"minimize"``.
        scale: raw value x scale = the value samplers see and plots show, in ``unit``.
        unit: e.g. ``"G"`` (MACs), ``"M"`` (params), ``"ms"``.
        axis: plot axis label.
        budget_field: the ``SearchConfig`` field holding its budget text, or None (no budget).
        budget_option: the command-line option of that budget.
        budget_scale: budget value (``nas.budget.Budget.value``: a count, or seconds) x this = raw units.
        budget_help: the option's help text; budget_metavar: its placeholder.
        at_resolution: the value depends on the input size (shown "at RxR").
        compute: ``(config, resolution, num_classes) -> raw value`` for costs that follow from the
            architecture alone; None for accuracy and measured costs.
        header: the export header line from a trial's provenance, or None.
    """

    name: str
    column: str
    direction: str
    scale: float = 1.0
    unit: str = ""
    axis: str = ""
    budget_field: str | None = None
    budget_option: str | None = None
    budget_scale: float = 1.0
    budget_help: str = ""
    budget_metavar: str = ""
    at_resolution: bool = False
    compute: Callable[[Any, int, int], float] | None = None
    header: Callable[[Mapping[str, Any]], str] | None = None

    @property
    def is_cost(self) -> bool:
        return self.direction == "minimize"

    @property
    def budget_kind(self) -> str | None:
        """The :mod:`nas.budget` kind of its budget (the metric's name)."""
        return self.name if self.budget_field else None

    @property
    def sign(self) -> float:
        """+1 where larger is better, -1 where smaller is."""
        return 1.0 if self.direction == "maximize" else -1.0

    def placeholder(self) -> float:
        """The objective value of a candidate it was not measured for (samplers rank such trials by
        their constraint violation, never by this value)."""
        return 0.0 if self.direction == "maximize" else float("inf")


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("accuracy", "accuracy", "maximize", unit="%", axis="proxy top-1 accuracy (%)"),
    Metric("macs", "macs", "minimize", scale=1e-9, unit="G", axis="GMACs", budget_field="budget",
           budget_option="--budget", budget_metavar="MACS",
           budget_help="MAC budget at --resolution, e.g. 4GFLOPs, 4.1G, 800MFLOPs (FLOPs = multiply-accumulates)",
           at_resolution=True, compute=_macs, header=_macs_line),
    Metric("params", "params", "minimize", scale=1e-6, unit="M", axis="parameters (M)",
           budget_field="params_budget", budget_option="--params-budget", budget_metavar="COUNT",
           budget_help="parameter budget, e.g. 20M", compute=_params, header=_params_line),
    Metric("latency", "latency_ms", "minimize", unit="ms", axis="latency (ms)", budget_field="latency_budget",
           budget_option="--latency-budget", budget_scale=1e3, budget_metavar="TIME",
           budget_help="latency budget on --device, e.g. 2.5ms or 400us (batch --batch-size, --dtype)",
           at_resolution=True, header=_latency_line),
)}

COSTS = tuple(m for m in METRICS.values() if m.is_cost)
ANALYTIC_COSTS = tuple(m for m in COSTS if m.compute is not None)


def metric(name: str) -> Metric:
    """The metric called ``name`` (KeyError names the known ones)."""
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRICS)}") from None


def by_column(column: str) -> Metric:
    """The metric stored in ``column``."""
    return next(m for m in METRICS.values() if m.column == column)
