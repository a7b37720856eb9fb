"""Accuracy estimators: how good is this candidate? One small interface the search asks through.

The backends never train or score a model themselves: :class:`nas.search.Evaluator` holds one
:class:`AccuracyEstimator` and calls :meth:`~AccuracyEstimator.estimate`, which returns a
:class:`nas.proxy.ProxyResult` (the ``accuracy`` field is the estimate; higher is better). Built in:

* ``proxy`` (:class:`ProxyTraining`): a short training with the search's ``ProxyConfig``, reported
  after every epoch, so a scheduler (ASHA) may stop it early; at any rung of a multi-fidelity schedule
  (``nas.proxy.RungSchedule``), continuing the rung below from its checkpoint.
* ``naswot``, ``synflow``, ``grad_norm`` (:class:`TrainingFree`): a score at initialisation, no training;
  their "accuracy" is the score (how well each ranks: ``docs/performance.md``).
* ``supernet`` (:class:`InheritedAccuracy`): accuracy with weights inherited from a weight-sharing supernet
  (:mod:`nas.supernet`), trained once per space, range and data and cached; it *screens*: its first-rung
  estimates only choose which candidates train standalone at the top rung, and only those enter the front.

A new estimator subclasses :class:`AccuracyEstimator` and is registered with :func:`register_estimator`;
``--estimator NAME`` then selects it. One that needs to know the search (its space, budgets, data) reads the
:class:`SearchContext` handed to :meth:`AccuracyEstimator.prepare`.
"""
from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

from cvt import UserError

from . import proxy
from .proxy import ProxyConfig, ProxyResult, ReportFn, RungSchedule, zero_cost

__all__ = ["AccuracyEstimator", "SearchContext", "ProxyTraining", "TrainingFree", "InheritedAccuracy", "ESTIMATORS",
           "register_estimator", "make_estimator", "screens"]

_log = logging.getLogger("nas.search")


@dataclass(frozen=True)
class SearchContext:
    """What an estimator may know of the search it serves (:meth:`AccuracyEstimator.prepare`).

    Attributes:
        space: the search space; dataset: the search's data (``nas.data.Dataset``).
        budgets: metric name -> limit in the metric's raw unit (MACs, seconds, parameters).
        resolution: the input size costs are taken at.
        options: the estimator's own settings from the command line (``supernet_range``, ``supernet_recipe``).
    """

    space: Any
    dataset: Any
    budgets: Mapping[str, float] = field(default_factory=dict)
    resolution: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


class AccuracyEstimator:
    """Base class: estimates a candidate's accuracy under fixed settings.

    Args:
        settings: the proxy settings of the search (data selection, resolution, seed, device, threads);
            an estimator uses what applies to it.

    Attributes:
        reports_epochs: whether :meth:`estimate` calls ``report`` per epoch (schedulers such as ASHA
            need it).
        supports_rungs: whether it can estimate at a higher rung of a :class:`nas.proxy.RungSchedule`
            (multi-fidelity promotion needs it).
    """

    reports_epochs: ClassVar[bool] = False
    supports_rungs: ClassVar[bool] = False
    screens: ClassVar[bool] = False  # first-rung estimates only pick what trains at the top rung (never the front)

    def __init__(self, settings: ProxyConfig):
        self.settings = settings

    def prepare(self, context: SearchContext) -> dict[str, Any]:
        """Learn the search before the first estimate and check it can be served (``UserError`` if not); cheap,
        called in every worker. Returns what the run records about this estimator (``run.json``)."""
        return {}

    def build(self) -> None:
        """Make what every worker will load (a supernet, say), once, in the main process after :meth:`prepare`
        and before any worker starts; may take long, shows progress, resumes after a kill."""

    def estimate(self, model_config: Any, dataset: Any, report: ReportFn | None = None, *,
                 schedule: RungSchedule | None = None, rung: int = 0,
                 directory: Path | None = None) -> ProxyResult:
        """The estimate for ``model_config`` on ``dataset``.

        Args:
            schedule, rung: estimate at this rung of ``schedule`` (rung 0, the base settings, when None).
            directory: where this candidate's checkpoints live (an estimator that trains resumes from them
                after a kill and continues lower rungs from them); None keeps nothing.

        Raises:
            nas.proxy.TrainingFailed: the estimate could not be made (diverged, out of memory).
        """
        raise NotImplementedError


class ProxyTraining(AccuracyEstimator):
    """A short training (:func:`nas.proxy.train_proxy`): top-1 validation accuracy after the last epoch."""

    reports_epochs = True
    supports_rungs = True

    def estimate(self, model_config: Any, dataset: Any, report: ReportFn | None = None, *,
                 schedule: RungSchedule | None = None, rung: int = 0,
                 directory: Path | None = None) -> ProxyResult:
        if directory is None:
            if rung:
                raise ValueError("a rung above 0 continues a checkpoint: give the candidate's directory")
            return proxy.train_proxy(model_config, dataset, self.settings, report=report)
        return proxy.train_rung(model_config, dataset, self.settings, schedule or RungSchedule((1,)), rung,
                                directory, report=report)


class TrainingFree(AccuracyEstimator):
    """A training-free score at initialisation (:mod:`nas.proxy.zero_cost`), returned as the accuracy."""

    def __init__(self, settings: ProxyConfig, score: str):
        super().__init__(settings)
        self.score = score

    def estimate(self, model_config: Any, dataset: Any, report: ReportFn | None = None, *,
                 schedule: RungSchedule | None = None, rung: int = 0,
                 directory: Path | None = None) -> ProxyResult:
        if rung:
            raise ValueError(f"{self.score} is training-free: it has no rungs above 0")
        start = time.perf_counter()
        value = zero_cost.score(self.score, model_config, dataset, self.settings)
        return _untrained_result(value, time.perf_counter() - start, self.settings, dataset)


def _untrained_result(value: float, wall: float, settings: ProxyConfig, dataset: Any) -> ProxyResult:
    """An estimate made without training, in the record every estimate returns."""
    return ProxyResult(accuracy=value, best_accuracy=value, epochs_completed=0, steps_completed=0, history=[],
                       stopped_early=False, wall_time_s=wall, train_images_per_s=float("nan"), num_params=0,
                       device=settings.device, threads=settings.threads or 0, proxy=settings.to_dict(),
                       dataset=dataset.description)


class InheritedAccuracy(AccuracyEstimator):
    """Top-1 validation accuracy with weights inherited from a supernet (:mod:`nas.supernet`) at rung 0; at a higher
    rung, the proxy training of that rung (:func:`nas.proxy.train_rung`, from scratch through the rungs below), which
    confirms the supernet's picks.

    The supernet covers a MACs range of the space: ``supernet_range`` (GMACs), else the narrowest cached one (same
    space, data and recipe) that holds the MACs budget, else half the MACs budget to the budget. It is scored on
    ``settings.val_subset`` validation images after each member's BatchNorm statistics are re-estimated.
    """

    supports_rungs = True
    screens = True

    def __init__(self, settings: ProxyConfig):
        super().__init__(settings)
        self._context: SearchContext | None = None
        self._members: Any = None
        self._recipe: Any = None
        self._directory: Path | None = None
        self._score: Callable[[Any], float] | None = None

    def prepare(self, context: SearchContext) -> dict[str, Any]:
        from .devices import resolve_device
        from .supernet import choose_range, recipe_named, supernet_dir

        self._context = context
        device = str(resolve_device(self.settings.device))
        self._recipe = recipe_named(context.options.get("supernet_recipe") or "auto", device)
        self._members = choose_range(context.space, context.dataset, self._recipe, given=context.options.get(
            "supernet_range"), macs_budget=context.budgets.get("macs"), resolution=context.resolution)
        self._directory = supernet_dir(self._members, context.dataset, self._recipe)
        return {"supernet": str(self._directory), "range_gmacs": [self._members.low / 1e9, self._members.high / 1e9],
                "recipe": self._recipe.to_dict(), "cached": (self._directory / "supernet.pt").is_file()}

    def build(self) -> None:
        from .supernet import supernet_for

        if not (self._directory / "supernet.pt").is_file():
            _log.info("supernet: training one for %.3g-%.3g GMACs of %s (cached in %s; a killed training resumes "
                      "when the search is run again)", self._members.low / 1e9, self._members.high / 1e9,
                      self._context.space.name, self._directory)
        supernet_for(self._members, self._context.dataset, self._recipe, device=self.settings.device,
                     threads=self.settings.threads)

    def _scorer(self, dataset: Any) -> Callable[[Any], float]:
        if self._score is None:
            from .supernet import load_supernet

            if self._context is None:
                raise ValueError("InheritedAccuracy.prepare(context) was not called")
            path = self._directory / "supernet.pt"
            if not path.is_file():
                raise UserError(f"no trained supernet at {path}: the search trains it before its workers start; on a "
                                f"Ray cluster of several machines, copy it there")
            supernet = load_supernet(path, members=self._members)
            self._score = supernet.scorer(dataset, device=self.settings.device, val_images=self.settings.val_subset,
                                          seed=self.settings.seed)
            if self.settings.threads:
                import torch

                torch.set_num_threads(self.settings.threads)
        return self._score

    def estimate(self, model_config: Any, dataset: Any, report: ReportFn | None = None, *,
                 schedule: RungSchedule | None = None, rung: int = 0,
                 directory: Path | None = None) -> ProxyResult:
        if rung:  # a confirmation: the proxy's own training at that rung
            return ProxyTraining(self.settings).estimate(model_config, dataset, report, schedule=schedule, rung=rung,
                                                         directory=directory)
        score = self._scorer(dataset)
        start = time.perf_counter()
        value = score(model_config)
        return _untrained_result(value, time.perf_counter() - start, self.settings, dataset)


ESTIMATORS: dict[str, Callable[[ProxyConfig], AccuracyEstimator]] = {
    "proxy": ProxyTraining, **{name: functools.partial(TrainingFree, score=name) for name in zero_cost.SCORES},
    "supernet": InheritedAccuracy}


def register_estimator(name: str, factory: Callable[[ProxyConfig], AccuracyEstimator]) -> None:
    """Make ``factory(settings)`` available as ``--estimator NAME``."""
    ESTIMATORS[name] = factory


def screens(name: str) -> bool:
    """Whether the estimator registered as ``name`` screens (its first rung never enters the front)."""
    return bool(getattr(ESTIMATORS.get(name), "screens", False))


def make_estimator(name: str, settings: ProxyConfig) -> AccuracyEstimator:
    """The estimator registered as ``name``, for ``settings``."""
    try:
        factory = ESTIMATORS[name]
    except KeyError:
        raise UserError(f"unknown estimator {name!r}; use one of {', '.join(ESTIMATORS)}") from None
    return factory(settings)
