"""Accuracy estimators: how good is this candidate? One small interface the search asks through.

The backends never train or score a model themselves: :class:`nas.search.Evaluator` holds one
:class:`AccuracyEstimator` and calls :meth:`~AccuracyEstimator.estimate`, which returns a
:class:`nas.proxy.ProxyResult` (the ``accuracy`` field is the estimate; higher is better). Built in:

* ``proxy`` (:class:`ProxyTraining`): a short training with the search's ``ProxyConfig``, reported
  after every epoch, so a scheduler (ASHA) may stop it early; at any rung of a multi-fidelity schedule
  (``nas.proxy.RungSchedule``), continuing the rung below from its checkpoint.
* ``naswot``, ``synflow``, ``grad_norm`` (:class:`TrainingFree`): a score at initialisation, no training;
  their "accuracy" is the score (how well each ranks: ``docs/performance.md``).

A new estimator (a weight-sharing supernet, say) subclasses :class:`AccuracyEstimator`
and is registered with :func:`register_estimator`; ``--estimator NAME`` then selects it.
"""
from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any, Callable, ClassVar

from cvt import UserError

from . import proxy
from .proxy import ProxyConfig, ProxyResult, ReportFn, RungSchedule, zero_cost

__all__ = ["AccuracyEstimator", "ProxyTraining", "TrainingFree", "ESTIMATORS", "register_estimator",
           "make_estimator"]


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

    def __init__(self, settings: ProxyConfig):
        self.settings = settings

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
        wall = time.perf_counter() - start
        return ProxyResult(accuracy=value, best_accuracy=value, epochs_completed=0, steps_completed=0, history=[],
                           stopped_early=False, wall_time_s=wall, train_images_per_s=float("nan"), num_params=0,
                           device=self.settings.device, threads=self.settings.threads or 0,
                           proxy=self.settings.to_dict(), dataset=dataset.description)


ESTIMATORS: dict[str, Callable[[ProxyConfig], AccuracyEstimator]] = {
    "proxy": ProxyTraining, **{name: functools.partial(TrainingFree, score=name) for name in zero_cost.SCORES}}


def register_estimator(name: str, factory: Callable[[ProxyConfig], AccuracyEstimator]) -> None:
    """Make ``factory(settings)`` available as ``--estimator NAME``."""
    ESTIMATORS[name] = factory


def make_estimator(name: str, settings: ProxyConfig) -> AccuracyEstimator:
    """The estimator registered as ``name``, for ``settings``."""
    try:
        factory = ESTIMATORS[name]
    except KeyError:
        raise UserError(f"unknown estimator {name!r}; use one of {', '.join(ESTIMATORS)}") from None
    return factory(settings)
