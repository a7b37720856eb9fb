"""Evaluating one candidate: decode -> cost (before anything else) -> train only if within budget.

:class:`Evaluator` is backend-neutral (the Optuna worker loop and a Ray Tune trainable both use it);
:class:`OptunaObjective` is the Optuna glue: it samples through the space, records everything on the
trial (``_records.py``) and sets one ``trial.set_constraint`` value per budget so the sampler learns
where the budget boundary is.
"""
from __future__ import annotations

import contextlib
import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from cvt import UserError

from ._config import ESTIMATOR_OPTIONS, SearchConfig
from .._cpu import available_cpus
from ..devices import worker_device
from ..metrics import ANALYTIC_COSTS, METRICS
from ._records import Cost, cost_attrs, objective_values, training_attrs
from ._promotion import rung_of
from ._rundir import CHECKPOINTS, DeviceLock
from ._samplers import keeps_values

if TYPE_CHECKING:
    import optuna

__all__ = ["Evaluator", "OptunaObjective"]


class Evaluator:
    """Costs and proxy-trains candidates of one search, in one worker.

    Args:
        config: the search.
        run_dir: where the device locks live.
        worker: this worker's index (picks its GPU; its CPU-thread share is ``threads / workers``).
        dataset: an already loaded :class:`nas.data.Dataset` (loaded lazily otherwise).
        resolution: deployment resolution for costs (the space's own when None).
        threads, train_device: where this worker estimates, when its backend assigns them (a Ray trial's
            CPUs and GPU); by default its share of ``--threads`` and of the ``--train-device`` GPUs.
    """

    def __init__(self, config: SearchConfig, run_dir: Path, *, worker: int = 0, dataset: Any = None,
                 resolution: int | None = None, threads: int | None = None, train_device: str | None = None):
        from search_spaces import get_space

        self.config = config
        self.run_dir = Path(run_dir)
        self.worker = worker
        self.space = get_space(config.space.space)
        self.budgets = config.space.budgets
        self.resolution = resolution or config.space.resolution
        self.train_device = train_device or worker_device(config.training.train_device, worker)
        total = config.training.threads or available_cpus()
        self.threads = threads or max(1, total // config.sampling.workers)
        self._dataset = dataset
        self._estimator = None
        self.estimator_info: dict[str, Any] = {}
        self._predictor = None
        self._locks: dict[str, DeviceLock] = {}

    # ------------------------------------------------------------------ pieces
    @property
    def dataset(self):
        if self._dataset is None:
            from nas.data import load_dataset

            training = self.config.training
            self._dataset = load_dataset(training.data, training.data_dir, seed=self.config.sampling.seed)
        return self._dataset

    def proxy_config(self):
        """This worker's :class:`nas.proxy.ProxyConfig` (the search's overrides, seed, device, threads)."""
        from nas.proxy import ProxyConfig

        # GPU workers start from the trainer's GPU defaults; the search's own settings override them.
        return ProxyConfig.for_device(self.train_device, **{**self.config.training.proxy,
                                                             "seed": self.config.sampling.seed,
                                                             "threads": self.threads})

    @property
    def estimator(self):
        """This worker's :class:`nas.estimators.AccuracyEstimator` (``--estimator`` with its proxy settings),
        prepared for this search (:attr:`estimator_info` holds what it reported)."""
        if self._estimator is None:
            self._estimator = self._make_estimator(self.proxy_config())
        return self._estimator

    def _make_estimator(self, settings):
        from nas.estimators import SearchContext, make_estimator

        estimator = make_estimator(self.config.training.estimator, settings)
        training = self.config.training
        context = SearchContext(space=self.space, dataset=self.dataset,
                                budgets={k: b.value for k, b in self.budgets.items()}, resolution=self.resolution,
                                options={name: getattr(training, name) for name in ESTIMATOR_OPTIONS})
        self.estimator_info = estimator.prepare(context)
        return estimator

    def device_lock(self, device: str) -> DeviceLock:
        from nas.cost import normalize_device

        key = normalize_device(device)  # one lock per physical device: "cuda" and "cuda:0" are the same GPU
        if key not in self._locks:
            self._locks[key] = DeviceLock(self.run_dir, key)
        return self._locks[key]

    def decode(self, params: dict[str, Any]):
        """Sampled parameters -> validated model config."""
        return self.space.decode(params)

    # ------------------------------------------------------------------ cost
    def cost(self, model_config) -> Cost:
        """The analytic costs, then latency only if they are within budget (or when it is predicted)."""
        resolution = self.resolution or model_config.img_size
        cost = Cost(arch_id=model_config.arch_id(), resolution=resolution)
        for m in ANALYTIC_COSTS:
            cost.values[m.name] = m.compute(model_config, resolution, self.config.space.num_classes)
            if m.name in self.budgets:
                cost.violations[m.name] = _violation(cost.values[m.name], self.budgets[m.name].value)
        if self.config.space.uses_latency:
            if cost.feasible or self.config.latency.latency == "predicted":
                cost.values["latency"], cost.latency_iqr_ms, cost.latency_device, cost.latency_source = \
                    self.latency(model_config, resolution)
            if "latency" in self.budgets:
                # Not measured because a cheaper budget already failed: that budget decides.
                latency = cost.values.get("latency")
                cost.violations["latency"] = 0.0 if latency is None else _violation(
                    latency, self.budgets["latency"].value * METRICS["latency"].budget_scale)
        return cost

    def latency(self, model_config, resolution: int) -> tuple[float, float | None, str, str]:
        """(median ms, IQR ms or None, device name, "measured" | "predicted") at the search's settings.

        A measurement takes the device exclusively: no proxy training of any worker runs on it meanwhile.
        """
        c = self.config.latency
        if c.latency == "predicted":
            if self._predictor is None:
                from nas.cost import LatencyPredictor

                self._predictor = LatencyPredictor.load(c.latency_predictor)
            return float(self._predictor.predict(model_config)), None, self._predictor.device_name or c.device, \
                "predicted"
        from nas.cost import measure_latency

        # Before the run directory exists (preflight) no worker can be training.
        lock = self.device_lock(c.device).exclusive() if self.run_dir.is_dir() else contextlib.nullcontext()
        with lock:
            result = measure_latency(model_config, device=c.device, batch_size=c.batch_size, resolution=resolution,
                                     dtype=c.dtype, threads=c.latency_threads or available_cpus(),
                                     num_classes=self.config.space.num_classes)
        return float(result.median_ms), float(result.iqr_ms), result.device_name, "measured"

    def constraints(self, cost: Cost) -> dict[str, float]:
        """One constraint value per budget (<= 0: within budget), for ``trial.set_constraint``."""
        return {f"{kind}_budget": v for kind, v in cost.violations.items()}

    def values(self, cost: Cost, accuracy: float | None) -> list[float]:
        """Objective values in ``config.space.objective_names`` order.

        An untrained candidate gets accuracy 0 and an unmeasured latency ``inf``: both only matter to
        samplers for infeasible trials, which they rank by constraint violation, never by these values.
        """
        return objective_values(self.config.space.objective_names, {**cost.values, "accuracy": accuracy})

    # ------------------------------------------------------------------ training
    def checkpoints(self, arch_id: str) -> Path:
        """Where an architecture's rung checkpoints live (``RUN_DIR/checkpoints/<arch_id>``)."""
        return self.run_dir / CHECKPOINTS / arch_id

    def estimate(self, model_config, report: Callable[[int, float], Any] | None = None, *, rung: int = 0,
                 seed: int | None = None, directory: Path | None = None):
        """Estimate a candidate's accuracy at ``rung`` (a ``nas.proxy.ProxyResult``); holds its device shared,
        yielding to latency measurement at every epoch boundary.

        A training estimator keeps per-epoch checkpoints in ``directory`` (default :meth:`checkpoints`), so a
        killed training resumes and a promotion continues the rung below; ``seed`` overrides the search's
        (the self-check). Raises ``nas.proxy.TrainingFailed`` on NaN loss or out of memory.
        """
        estimator = self.estimator
        if seed is not None:
            estimator = self._make_estimator(self.proxy_config().replace(seed=seed))
        if estimator.supports_rungs and directory is None:
            directory = self.checkpoints(model_config.arch_id())
        lock = self.device_lock(self.train_device)
        with lock.shared():
            def on_epoch(epoch: int, accuracy: float):
                lock.epoch_boundary()
                return report(epoch, accuracy) if report is not None else None

            if estimator.supports_rungs:
                result = estimator.estimate(model_config, self.dataset, report=on_epoch,
                                            schedule=self.config.promotion.schedule, rung=rung, directory=directory)
            else:  # the base signature: a plug-in written before rungs existed still works
                result = estimator.estimate(model_config, self.dataset, report=on_epoch)
        if directory is not None and not self.config.promotion.promotes and not result.stopped_early:
            shutil.rmtree(directory, ignore_errors=True)  # nothing will continue it
        return result

    def close(self) -> None:
        for lock in self._locks.values():
            lock.close()


def _violation(value: float, limit: float) -> float:
    return (float(value) - float(limit)) / float(limit)


class OptunaObjective:
    """``values = objective(trial)``: sample, cost, constrain, and train only what fits.

    Args:
        evaluator: the worker's :class:`Evaluator`.
        find_trained: ``arch_id -> (trial number, values) | None``, to reuse an earlier training of the
            same architecture instead of training it again.
        on_epoch: called after every proxy epoch (progress display).
    """

    def __init__(self, evaluator: Evaluator, find_trained: Callable[[str], tuple[int, list[float]] | None],
                 on_epoch: Callable[[], None] | None = None):
        self.evaluator = evaluator
        self.find_trained = find_trained
        self.on_epoch = on_epoch

    def __call__(self, trial: "optuna.Trial") -> list[float] | None:
        """The trial's objective values, or None for an over-budget sample that ends PRUNED
        (:func:`nas.search._trials.tell` ends it either way)."""
        model_config, cost, ended, values = self.prepare(trial)
        if ended:
            return values

        def report(epoch: int, accuracy: float) -> None:
            if self.on_epoch is not None:
                self.on_epoch()

        result = self.evaluator.estimate(model_config, report, rung=rung_of(trial))
        return self.record_training(trial, cost, result)

    def prepare(self, trial: "optuna.Trial") -> tuple[Any, Cost, bool, list[float] | None]:
        """Sample, cost, constrain and record; the Ray backend calls this in its driver.

        Returns:
            ``(model_config, cost, ended, values)``: ``ended`` when the trial ends here untrained (over budget,
            duplicate), with ``values`` to tell (None: end it PRUNED); else the trial is marked as training.
        """
        ev = self.evaluator
        rung = rung_of(trial)
        trial.set_user_attr("rung", rung)
        params = ev.space.sample(trial)
        trial.set_user_attr("worker", ev.worker)
        trial.set_user_attr("phase", "sampled")
        model_config = ev.decode(params)
        cost = ev.cost(model_config)
        for name, value in ev.constraints(cost).items():
            trial.set_constraint(name, value)
        for key, value in cost_attrs(cost).items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("model_config", model_config.to_dict())
        trial.set_user_attr("model_family", type(model_config).__name__)
        if not cost.feasible:
            self._finish(trial, "over_budget")
            return model_config, cost, True, (ev.values(cost, None) if keeps_values(ev.config.sampling.sampler)
                                              else None)
        earlier = None if rung else self.find_trained(cost.arch_id)  # a promotion trains what was trained
        if earlier is not None:
            trial.set_user_attr("duplicate_of", earlier[0])
            self._finish(trial, "duplicate")
            return model_config, cost, True, list(earlier[1])
        trial.set_user_attr("rung_budget", ev.config.promotion.budget_of(rung))
        trial.set_user_attr("phase", "training")
        return model_config, cost, False, None

    def record_training(self, trial: "optuna.Trial", cost: Cost, result: Any) -> list[float]:
        """Record a finished proxy training (a :class:`nas.proxy.ProxyResult`); the objective values."""
        if not math.isfinite(result.accuracy):
            raise UserError(f"proxy training returned accuracy {result.accuracy}")
        if rung_of(trial) == 0 and self.evaluator.estimator.screens:
            trial.set_user_attr("screening", True)  # an estimate that only picks what trains at the top rung
        if getattr(result, "threads", None):  # where it ran: a promotion may run on a share of the threads
            trial.set_user_attr("threads", int(result.threads))
        for key, value in training_attrs(result).items():
            trial.set_user_attr(key, value)
        self._finish(trial, "trained")
        return self.evaluator.values(cost, result.accuracy)

    @staticmethod
    def _finish(trial: "optuna.Trial", status: str) -> None:
        trial.set_user_attr("phase", "done")
        trial.set_user_attr("status", status)  # last: a trial killed before this is re-run on --resume
