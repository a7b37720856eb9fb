"""The Ray Tune backend (``--backend ray``): proxy trainings as Tune trials on a local or joined Ray cluster.

Same space, sampler, budgets, records and outputs as the Optuna backend; only where the trainings run
differs. The division of work:

* **Driver** (this process): :class:`BudgetedSearcher`, a Tune ``Searcher`` over the run directory's
  Optuna study, samples a candidate with the space's define-by-run function and prices it with the shared
  :class:`~nas.search._objective.OptunaObjective` *before* Tune sees it. An over-budget or duplicate
  candidate is recorded (constraints set, so the sampler learns the boundary) and the next one is
  sampled; only a feasible candidate becomes a Tune trial. Over-budget candidates never reach a worker.
  Measured latency is taken here, holding the device lock exclusively: trainings on this machine pause at
  their next epoch boundary, so the measurement has the device to itself.
* **Workers**: :class:`ProxyTrial`, one Tune trial per candidate, trains it with the shared
  :class:`~nas.search._objective.Evaluator` in a thread and reports one Tune result per epoch (accuracy,
  MACs, params, latency), so epochs never wait on the driver.
* **Promotion** (``--rungs``): the searcher decides like the Optuna workers (``_promotion.next_step``): a
  promotion is one more Tune trial, training the architecture at the next rung from its checkpoint.
* **Early stopping** (``--scheduler asha``, with ``--rungs 1``): ASHA on per-epoch proxy accuracy. A trial it
  stops is told to Optuna as PRUNED with status ``pruned`` and its epochs recorded: it is never on the Pareto front,
  which holds only trials trained to the full proxy budget. (Left alone, Ray's ``OptunaSearch`` would tell
  it COMPLETE with its one-epoch accuracy.)
* **Failures**: a trial whose worker dies is retried (``FailureConfig``); an exception inside a training
  (NaN loss, out of memory) is a recorded failure, not retried.
* **Resume**: the Optuna study is the record. ``run_search`` first settles trials a killed driver left
  RUNNING (completed from their records, or failed as interrupted and queued again); then
  ``Tuner.restore`` reopens the Tune experiment without re-running its unfinished trials (the study has
  already re-queued them), so no finished trial is lost or trained twice.
"""
from __future__ import annotations

import json
import logging
import math
import queue
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import Searcher

from ..ray_cluster import RayCluster, check_trial_resources, init_ray
from ._config import SearchConfig
from ._objective import Evaluator, OptunaObjective
from ._promotion import deadlines, next_step, rung_of
from ._trials import fail, find_trained, mark_interrupted, requeue, tell
from ..metrics import COSTS
from ._records import Cost, failure_reason
from ._rundir import open_storage
from ._samplers import derive_seed, make_sampler

__all__ = ["RayBackend", "BudgetedSearcher", "ProxyTrial", "EXPERIMENTS_DIR", "MAX_FAILURES"]

_log = logging.getLogger("nas.search")
_trial_log = logging.getLogger("nas.search.ray_trial")  # in trial actors: their log in the Ray dashboard

EXPERIMENTS_DIR = "ray"  # Tune experiments live in RUN_DIR/ray/tune, tune-2, ...
MAX_FAILURES = 2  # retries of a trial whose worker died
_FINISHED = ".cvt-nas-finished"  # marks a Tune experiment that ended on its own (cannot be restored)

# Live searches of this process by run directory. Tuner.restore unpickles the searcher of an earlier
# session; it binds to the live session here, so settings a --resume may change (trials, timeout,
# workers) and the open storage come from now, not from the pickle.
_SESSIONS: dict[str, "_Session"] = {}


@dataclass
class _Session:
    """Everything the driver-side searcher needs for one run of :meth:`RayBackend.run`."""

    config: SearchConfig
    run_dir: Path
    objective: OptunaObjective
    deadline: float | None
    sampling_deadline: float | None = None
    progress: Any = None
    stop_reason: str | None = None
    epochs: int | None = None  # full proxy budget in epochs (None when --proxy-steps sets it)
    resources: tuple[float, float] = (1.0, 0.0)  # CPUs and GPUs per trial

    @property
    def key(self) -> str:
        return str(self.run_dir)

    def refresh(self) -> None:
        if self.progress is not None:
            self.progress.refresh()


class BudgetedSearcher(Searcher):
    """A Tune ``Searcher`` that samples through the run directory's Optuna study, prices every candidate in
    the driver and hands Tune only feasible ones.

    Sampling, constraints and records are the Optuna backend's (:class:`OptunaObjective`); the study is
    the run directory's, so ``trials.csv``, ``pareto.csv``, exports and optuna-dashboard read it as they
    read an Optuna-backend run. Stopping follows the Optuna backend too (``--trials`` proxy trainings,
    ``--timeout``, the untrained-sample guard): Tune runs with ``num_samples=-1`` until this searcher
    says it is finished.
    """

    def __init__(self, session: _Session, sampler: optuna.samplers.BaseSampler):
        config = session.config
        super().__init__(metric=list(config.space.objective_names),
                         mode=["max" if d == "maximize" else "min" for d in config.directions])
        self._key = session.key
        self._session = session
        self._study = optuna.load_study(study_name=config.name, sampler=sampler,
                                        storage=open_storage(config.run.storage, session.run_dir))
        self._live: dict[str, tuple[optuna.Trial, Cost]] = {}  # Tune trial id -> its Optuna trial, cost
        self._history: dict[str, list[float]] = {}  # Tune trial id -> per-epoch accuracies so far

    # ------------------------------------------------------------------ pickling (tuner.pkl, restore)
    def __getstate__(self) -> dict[str, Any]:
        # Storage, sampler and evaluator belong to the live session; in-flight trials are settled by
        # run_search on --resume, so nothing else needs to survive.
        return {"_key": self._key}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        session = _SESSIONS.get(self._key)
        if session is None:
            raise RuntimeError(f"no live cvt-nas search for {self._key}: restore it with python -m nas.search "
                               f"--backend ray --resume")
        self._bind(session)

    def _bind(self, session: _Session) -> None:
        fresh = BudgetedSearcher(session, _sampler(session.config, session.run_dir))
        self.__dict__.update(fresh.__dict__)

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_text("cvt-nas: the search state is the Optuna study in the run directory\n")

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to load: the study in the run directory is the state (see :meth:`__setstate__`)."""

    # ------------------------------------------------------------------ Tune's calls
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        s = self._session
        if len(self._live) >= s.config.sampling.workers:
            return None
        while True:
            step = next_step(s.config, self._study.get_trials(deepcopy=False), s.deadline, s.sampling_deadline)
            if step.action == "wait":
                return None
            if step.action == "stop":
                s.stop_reason = step.reason
                return Searcher.FINISHED
            if step.action == "promote":
                promotion = step.promotion
                self._study.enqueue_trial(dict(promotion.source.params), user_attrs=promotion.user_attrs())
            trial = self._study.ask()
            try:
                _, cost, ended, values = s.objective.prepare(trial)
            except Exception as err:  # noqa: BLE001 - one bad candidate (e.g. its latency run failed) must not stop the search
                self._fail(trial, failure_reason(err))
                continue
            if ended:  # over budget or a duplicate: recorded, never trained
                tell(self._study, trial, values)
                s.refresh()
                continue
            self._live[trial_id] = (trial, cost)
            cpus, gpus = s.resources
            return {"nas_trial": trial.number, "arch_id": cost.arch_id, "rung": rung_of(trial),
                    **{m.name: cost.values.get(m.name) for m in COSTS}, "arch": dict(trial.params), "cpus": cpus,
                    "gpus": gpus}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if "accuracy" in result:
            self._history.setdefault(trial_id, []).append(float(result["accuracy"]))
        self._session.refresh()

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        entry = self._live.pop(trial_id, None)
        if entry is None:
            return
        trial, cost = entry
        s = self._session
        result = result or {}
        history = self._history.pop(trial_id, [])
        if error:
            self._fail(trial, f"the Ray worker training it died {MAX_FAILURES + 1} times (killed, out of host "
                              f"memory or node lost); Tune logged the error of trial-{trial.number:04d}")
        elif result.get("complete"):
            from nas.proxy import ProxyResult

            try:
                values = s.objective.record_training(trial, cost, ProxyResult(**json.loads(result["proxy_result"])))
            except Exception as err:  # noqa: BLE001 - same policy as the Optuna backend
                self._fail(trial, failure_reason(err))
            else:
                self._study.tell(trial, values)
        elif result.get("failure"):
            self._fail(trial, result["failure"])
        elif s.config.backend.scheduler == "asha" and "accuracy" in result:
            self._prune(trial, result, history + [float(result["accuracy"])])
        else:  # stopped before its first epoch ended (e.g. the search was interrupted): sample it again
            mark_interrupted(self._study, trial)
            requeue(self._study, trial)
        s.refresh()

    # ------------------------------------------------------------------ records
    def _fail(self, trial: optuna.Trial, reason: str) -> None:
        fail(self._study, trial, reason)

    def _prune(self, trial: optuna.Trial, result: dict[str, Any], history: list[float]) -> None:
        """A trial ASHA stopped: keep what it reached, with its fidelity, off the Pareto front."""
        full = self._session.epochs
        attrs = {"accuracy": float(result["accuracy"]), "best_accuracy": max(history), "epochs": int(result["epoch"]),
                 "history": history, "stopped_early": True,
                 "fidelity": f"{int(result['epoch'])}/{full} epochs" if full else f"{int(result['epoch'])} epochs"}
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("phase", "done")
        trial.set_user_attr("status", "pruned")  # last, as in OptunaObjective._finish
        self._study.tell(trial, state=optuna.trial.TrialState.PRUNED)


class ProxyTrial(tune.Trainable):
    """One candidate's proxy training as a Tune trial; one ``step`` per epoch.

    Training runs in a thread and queues one result per epoch, so it never waits for the driver: the
    driver may be measuring a latency, and trainings pause at their next epoch boundary for that. The
    last epoch is reported together with the finished :class:`nas.proxy.ProxyResult` (``complete``), so
    a trial stopped by ASHA is always told apart from one trained to the full budget.

    Its ``repr`` (the Ray dashboard's actor list) names the trial, architecture and costs; every epoch is
    logged to the actor's log as well.
    """

    @classmethod
    def default_resource_request(cls, config: dict[str, Any]) -> tune.PlacementGroupFactory:
        return tune.PlacementGroupFactory([{"CPU": config["cpus"], "GPU": config["gpus"]}])

    def setup(self, config: dict[str, Any], *, search: dict[str, Any], run_dir: str, threads: int, train_device: str,
              dataset: Any = None) -> None:
        import nas  # noqa: F401  (this worker process: torchvision fix before anything imports timm)

        if not _trial_log.handlers:
            _trial_log.addHandler(logging.StreamHandler(sys.stderr))
            _trial_log.setLevel(logging.INFO)
            _trial_log.propagate = False
        # Costs under the objective names (Tune checks every result has the searcher's metrics); latency in ms.
        self._info = {k: config[k] for k in ("nas_trial", "arch_id", "rung", *(m.name for m in COSTS))}
        # Checkpoints and device locks in the run directory when this node sees it, else node-local (a
        # promotion there trains its lower rungs again first).
        self._evaluator = Evaluator(SearchConfig.from_dict(search), _lock_dir(Path(run_dir)), dataset=dataset,
                                    threads=threads, train_device=train_device)
        model_config = self._evaluator.decode(config["arch"])
        settings = self._evaluator.config.promotion.schedule.settings(self._evaluator.proxy_config(), config["rung"])
        self._last_epoch = settings.epochs if settings.steps is None else None
        self._results: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        # Not a daemon: a trial stopped mid-epoch (ASHA) finishes that epoch and exits cleanly, instead of
        # the interpreter tearing down a thread that is inside torch.
        threading.Thread(target=self._train, args=(model_config,), name="proxy-training").start()

    def _train(self, model_config: Any) -> None:
        try:
            result = self._evaluator.estimate(model_config, self._on_epoch, rung=self._info["rung"])
        except Exception as err:  # noqa: BLE001 - recorded as the trial's failure; retrying would fail again
            self._results.put({"failure": failure_reason(err), "done": True})
            return
        # Tune flattens nested results and its loggers take scalars only: the record travels as JSON.
        self._results.put({"epoch": result.epochs_completed, "accuracy": result.accuracy,
                           "complete": not result.stopped_early, "proxy_result": json.dumps(result.to_dict()),
                           "done": True})

    def _on_epoch(self, epoch: int, accuracy: float) -> bool:
        _trial_log.info("%s: epoch %d, proxy accuracy %.2f%%", self, epoch, accuracy)
        if epoch != self._last_epoch:  # the last one goes out with the finished result
            self._results.put({"epoch": epoch, "accuracy": float(accuracy)})
        return self._stop.is_set()

    def step(self) -> dict[str, Any]:
        return {**self._info, **self._results.get()}

    def cleanup(self) -> None:
        self._stop.set()  # a training still running stops at its next epoch boundary

    def __repr__(self) -> str:
        info = getattr(self, "_info", None)
        if not info:
            return "ProxyTrial"
        latency = "" if info["latency"] is None else f", {info['latency']:.2f} ms"
        rung = f" (rung {info['rung']})" if info["rung"] else ""
        return (f"trial {info['nas_trial']} arch {info['arch_id']}{rung}: {info['macs'] / 1e9:.3f} GMACs, "
                f"{info['params'] / 1e6:.2f}M params{latency}")


def _lock_dir(run_dir: Path) -> Path:
    """Device locks and checkpoints shared with the driver when this node sees the run directory, else
    node-local."""
    if run_dir.is_dir():
        return run_dir
    local = Path(tempfile.gettempdir()) / "cvt-nas-locks" / run_dir.name
    local.mkdir(parents=True, exist_ok=True)
    return local


def _trial_dirname(trial: Any) -> str:
    return f"trial-{trial.config['nas_trial']:04d}-{trial.trial_id}"


def _sampler(config: SearchConfig, run_dir: Path) -> optuna.samplers.BaseSampler:
    """The Optuna backend's sampler; a resumed study gets a fresh seed (no replay of its start-up)."""
    existing = len(optuna.load_study(study_name=config.name, storage=open_storage(config.run.storage, run_dir))
                   .get_trials(deepcopy=False))
    return make_sampler(config.sampling.sampler, derive_seed(config.sampling.seed, 0, existing), config.sampling.trials)


def _trial_settings(config: SearchConfig) -> dict[str, Any]:
    """The search's settings for its trials, with a space file's path made absolute: Tune runs workers in
    their trial directory."""
    space = config.space.space
    if space.endswith((".yaml", ".yml")) and Path(space).exists():
        space = str(Path(space).resolve())
    return config.replace(space=space).to_dict()


class RayBackend:
    """Runs the search's proxy trainings as Ray Tune trials (see the module docstring)."""

    def __init__(self) -> None:
        self._cluster: RayCluster | None = None
        self._owned = False  # this backend called ray.init, so it calls ray.shutdown
        self._resources: tuple[float, float] = (1.0, 0.0)

    def preflight(self, config: SearchConfig) -> None:
        """Join (or start) Ray and check the per-trial resources, before the run directory is touched."""
        import ray

        if self._cluster is None:
            self._owned = not ray.is_initialized()
            self._cluster = init_ray(
                config.backend.ray_address,
                num_cpus=config.training.threads if config.backend.ray_address is None else None,
                job_metadata={"cvt-nas": "search", "study": config.name, "run_dir": str(config.run_dir.resolve())})
            for line in self._cluster.describe():
                _log.info("%s", line)
        try:
            self._resources = _trial_resources(config, self._cluster)
        except BaseException:
            self._disconnect()
            raise

    def _disconnect(self) -> None:
        import ray

        if self._owned:
            ray.shutdown()
        self._cluster, self._owned = None, False

    def run(self, config: SearchConfig, run_dir: Path, *, resolution: int | None = None, dataset: Any = None,
            progress: Any = None) -> str:
        self.preflight(config)
        run_dir = Path(run_dir).resolve()
        evaluator = Evaluator(config, run_dir, resolution=resolution, dataset=dataset)
        try:
            cpus, gpus = self._resources
            study = optuna.load_study(study_name=config.name, storage=open_storage(config.run.storage, run_dir))
            objective = OptunaObjective(evaluator, lambda arch_id: find_trained(study, arch_id))
            proxy = evaluator.proxy_config()
            deadline, sampling_deadline = deadlines(config)
            session = _Session(config=config, run_dir=run_dir, objective=objective, progress=progress,
                               deadline=deadline, sampling_deadline=sampling_deadline,
                               epochs=proxy.epochs if proxy.steps is None else None, resources=(cpus, gpus))
            _log.info("ray: up to %d trial(s) at once, each %g CPU(s) and %g GPU(s); Tune experiment in %s",
                      config.sampling.workers, cpus, gpus, run_dir / EXPERIMENTS_DIR)
            trainable = tune.with_parameters(ProxyTrial, search=_trial_settings(config), run_dir=str(run_dir),
                                             threads=max(1, int(cpus)), train_device="cuda" if gpus > 0 else "cpu",
                                             dataset=dataset if dataset is not None else evaluator.dataset)
            trainable.__qualname__ = ProxyTrial.__qualname__  # the class name the Ray dashboard lists
            _SESSIONS[session.key] = session
            try:
                results = self._tuner(session, trainable).fit()
            finally:
                del _SESSIONS[session.key]
            if session.stop_reason is None:  # Tune caught Ctrl-C and stopped its trials: --resume continues
                raise KeyboardInterrupt
            Path(results.experiment_path, _FINISHED).touch()
            return session.stop_reason
        finally:
            evaluator.close()
            self._disconnect()

    @staticmethod
    def _tuner(session: _Session, trainable: Any) -> tune.Tuner:
        """Restore the last Tune experiment if a killed session left it unfinished, else start a new one."""
        config, root = session.config, session.run_dir / EXPERIMENTS_DIR
        previous = sorted((p for p in root.glob("tune*") if p.is_dir()), key=lambda p: (len(p.name), p.name))
        last = previous[-1] if previous else None
        if config.run.resume and last is not None and not (last / _FINISHED).exists() and tune.Tuner.can_restore(last):
            _log.info("ray: restoring the Tune experiment %s", last)
            # Unfinished trials are not re-run by Tune: run_search re-queued them in the study already.
            return tune.Tuner.restore(str(last), trainable=trainable, resume_unfinished=False, resume_errored=False)
        scheduler = None
        if config.backend.scheduler == "asha":
            scheduler = ASHAScheduler(metric="accuracy", mode="max", time_attr="epoch", max_t=session.epochs,
                                      grace_period=1, reduction_factor=2)
        searcher = BudgetedSearcher(session, _sampler(config, session.run_dir))
        return tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=-1, reuse_actors=False,
                                        trial_dirname_creator=_trial_dirname),
            run_config=tune.RunConfig(name="tune" if last is None else f"tune-{len(previous) + 1}",
                                      storage_path=str(root), verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=MAX_FAILURES),
                                      # A proxy training restarts from scratch; nothing to checkpoint.
                                      checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False)))


def _trial_resources(config: SearchConfig, cluster: RayCluster) -> tuple[float, float]:
    """CPUs and GPUs per trial: as asked, else an equal share of the cluster's CPUs per worker."""
    cpus = config.backend.cpus_per_trial
    if cpus is None:
        share = cluster.total("CPU") / config.sampling.workers
        cpus = min(cluster.largest("CPU"), math.floor(share) if share >= 1 else round(share, 2))
    check_trial_resources(cluster, cpus, config.backend.gpus_per_trial)
    return float(cpus), float(config.backend.gpus_per_trial)
