"""The Optuna backend: N worker processes sharing the study storage (one in-process worker for N=1).

Each worker loops ask -> evaluate -> tell. Before asking, it takes the run directory's claim lock and
counts trainings done plus trials in flight, so ``--trials N`` means exactly N proxy trainings however
many workers race for them; over-budget and duplicate samples do not use up that count. A worker that
is killed leaves its trial RUNNING; :func:`recover_interrupted` (run at ``--resume``, under the run
lock) finishes it from what it recorded, or fails it as interrupted and queues its parameters again.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ._config import SearchConfig
from ._objective import Evaluator, OptunaObjective
from ._records import failure_reason, is_trained, values_from_attrs
from ._rundir import open_storage
from ._samplers import derive_seed, make_sampler

if TYPE_CHECKING:
    import optuna

__all__ = ["OptunaBackend", "run_worker", "recover_interrupted", "count_trials"]

_log = logging.getLogger(__name__)

_WAIT_S = 1.0  # poll interval while other workers' trials decide whether a training slot is left


def load_study(config: SearchConfig, run_dir: Path, sampler=None) -> "optuna.Study":
    import optuna

    return optuna.load_study(study_name=config.name, storage=open_storage(config.storage, run_dir), sampler=sampler)


def count_trials(trials: list["optuna.trial.FrozenTrial"]) -> dict[str, int]:
    """Counts that drive stopping and the progress display.

    ``trainings``: proxy trainings finished (trained, stopped early by a scheduler (``pruned``), or failed
    while training); ``untrained``: samples
    that trained nothing (over budget, duplicate, failed before training); ``costed``/``feasible``:
    samples whose cost was computed / within every budget; ``running``: trials in flight.
    """
    counts = dict.fromkeys(("trainings", "trained", "pruned", "failed", "untrained", "duplicates", "running",
                            "costed", "feasible", "interrupted"), 0)
    for t in trials:
        state, attrs = t.state.name, t.user_attrs
        status = attrs.get("status")
        if state in ("RUNNING", "WAITING"):
            counts["running"] += state == "RUNNING"
            continue
        if status == "interrupted":
            counts["interrupted"] += 1
            continue
        if "arch_id" in attrs:
            counts["costed"] += 1
            counts["feasible"] += all(v <= 0 for v in t.constraints.values())
        if state == "COMPLETE" and status == "trained":
            counts["trainings"] += 1
            counts["trained"] += 1
        elif state == "PRUNED" and status == "pruned":
            counts["trainings"] += 1
            counts["pruned"] += 1
        elif state == "FAIL":
            counts["failed"] += 1
            counts["trainings" if attrs.get("phase") == "training" else "untrained"] += 1
        else:
            counts["untrained"] += 1
            counts["duplicates"] += status == "duplicate"
    return counts


def stop_reason(config: SearchConfig, counts: dict[str, int], deadline: float | None) -> str | None:
    """Why no new trial should start, ``"wait"`` if one may once running trials finish, else None."""
    if counts["trainings"] >= config.trials:
        return f"{counts['trainings']} proxy trainings done"
    if deadline is not None and time.time() >= deadline:
        return "timeout reached"
    if counts["untrained"] >= config.untrained_limit:
        return (f"guard: {counts['untrained']} samples trained nothing (over budget, duplicates or failed before "
                f"training); the budget may be too tight for the space (raise it, or --max-untrained)")
    if counts["trainings"] + counts["running"] >= config.trials:
        return "wait"  # every remaining slot may be taken by a trial in flight
    return None


@contextlib.contextmanager
def _claim_lock(run_dir: Path) -> Iterator[None]:
    with open(run_dir / ".claim.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _find_trained(study: "optuna.Study", arch_id: str) -> tuple[int, list[float]] | None:
    for t in study.get_trials(deepcopy=False):
        if is_trained(t) and t.user_attrs.get("arch_id") == arch_id:
            return t.number, list(t.values)
    return None


def _requeue(study: "optuna.Study", trial: Any) -> None:
    # Only fully sampled trials can be replayed; a trial killed mid-sampling is simply sampled anew.
    if trial.user_attrs.get("phase") and trial.params:
        study.enqueue_trial(dict(trial.params), user_attrs={"requeue_of": trial.number})


def _mark_interrupted(study: "optuna.Study", trial: Any) -> None:
    """Fail a RUNNING trial (of this or a dead process) as interrupted."""
    import optuna

    # Trial and FrozenTrial both carry their storage id; attributes must be set before the trial ends.
    study._storage.set_trial_user_attr(trial._trial_id, "status", "interrupted")
    study._storage.set_trial_user_attr(trial._trial_id, "failure", "interrupted (the search was stopped or killed)")
    study.tell(trial.number, state=optuna.trial.TrialState.FAIL)


def recover_interrupted(config: SearchConfig, run_dir: Path) -> dict[str, int]:
    """Settle trials a killed search left RUNNING, so none is lost or run twice.

    A trial whose outcome was fully recorded (status set) is completed from its attributes; any other
    is failed as ``interrupted`` and its parameters queued again. Call only while holding the run lock
    (no worker is alive). Returns how many trials were completed and re-queued.
    """
    import optuna

    study = load_study(config, run_dir)
    done = requeued = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        status = t.user_attrs.get("status")
        if status in ("trained", "over_budget") and t.user_attrs.get("phase") == "done":
            study.tell(t.number, values_from_attrs(config.objective_names, t.user_attrs))
            done += 1
        elif status == "pruned" and t.user_attrs.get("phase") == "done":  # Ray backend with --scheduler asha
            study.tell(t.number, state=optuna.trial.TrialState.PRUNED)
            done += 1
        else:
            _mark_interrupted(study, t)
    queued = {t.user_attrs.get("requeue_of") for t in study.get_trials(deepcopy=False)}
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
        if t.user_attrs.get("status") == "interrupted" and t.number not in queued:
            _requeue(study, t)
            requeued += 1
    return {"completed": done, "requeued": requeued}


def run_worker(config: SearchConfig, run_dir: Path, *, worker: int = 0, deadline: float | None = None,
               resolution: int | None = None, dataset: Any = None,
               on_update: Callable[[], None] | None = None) -> str:
    """Ask, evaluate and tell until a stop reason applies; returns it.

    Args:
        config: the search.
        run_dir: run directory (storage and locks).
        worker: index of this worker (seed, GPU, thread share).
        deadline: ``time.time()`` after which no trial starts.
        resolution: deployment resolution for costs.
        dataset: the loaded dataset, when the caller has it already.
        on_update: called after every trial and proxy epoch (progress display).
    """
    import optuna

    existing = len(load_study(config, run_dir).get_trials(deepcopy=False))
    sampler = make_sampler(config.sampler, derive_seed(config.seed, worker, existing), config.trials)
    study = load_study(config, run_dir, sampler)
    evaluator = Evaluator(config, run_dir, worker=worker, dataset=dataset, resolution=resolution)
    objective = OptunaObjective(evaluator, lambda arch_id: _find_trained(study, arch_id), on_epoch=on_update)
    try:
        while True:
            with _claim_lock(run_dir):
                reason = stop_reason(config, count_trials(study.get_trials(deepcopy=False)), deadline)
                trial = study.ask() if reason is None else None
            if reason == "wait":
                time.sleep(_WAIT_S)
                continue
            if reason is not None:
                return reason
            try:
                values = objective(trial)
            except KeyboardInterrupt:
                _mark_interrupted(study, trial)
                _requeue(study, trial)
                raise
            except Exception as err:  # noqa: BLE001 - any failure of one candidate must not stop the search
                trial.set_user_attr("failure", failure_reason(err))
                trial.set_user_attr("status", "failed")
                _log.debug("trial %d failed", trial.number, exc_info=True)
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(trial, values)
            if on_update is not None:
                on_update()
    finally:
        evaluator.close()


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker when the search process dies (even by kill -9)."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _worker_process(config_dict: dict[str, Any], run_dir: str, worker: int, deadline: float | None,
                    resolution: int | None, parent: int) -> None:
    _die_with_parent()
    if os.getppid() != parent:  # the parent died before prctl took effect
        return
    import warnings

    import nas  # noqa: F401  (torchvision fix before timm)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.basicConfig(level=logging.ERROR)
    warnings.simplefilter("ignore")
    try:
        run_worker(SearchConfig.from_dict(config_dict), Path(run_dir), worker=worker, deadline=deadline,
                   resolution=resolution)
    except KeyboardInterrupt:
        sys.exit(130)


class OptunaBackend:
    """Local processes sharing one Optuna study (a journal file in the run directory by default)."""

    def run(self, config: SearchConfig, run_dir: Path, *, resolution: int | None = None, dataset: Any = None,
            progress: Any = None) -> str:
        deadline = time.time() + config.timeout if config.timeout else None
        update = progress.refresh if progress is not None else None
        if config.workers == 1:
            return run_worker(config, run_dir, deadline=deadline, resolution=resolution, dataset=dataset,
                              on_update=update)
        ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch thread pools
        procs = [ctx.Process(target=_worker_process, name=f"nas-worker-{i}",
                             args=(config.to_dict(), str(run_dir), i, deadline, resolution, os.getpid()))
                 for i in range(config.workers)]
        for p in procs:
            p.start()
        try:
            while any(p.is_alive() for p in procs):
                if update is not None:
                    update()
                time.sleep(1.0)
        except KeyboardInterrupt:
            # Ctrl-C reaches the workers too; `kill` reaches only this process: pass it on. Each worker
            # records its running trial as interrupted (queued again) before it exits.
            for p in procs:
                p.join(timeout=2)
                if p.is_alive():
                    os.kill(p.pid, signal.SIGINT)
            for p in procs:
                p.join(timeout=30)
            raise
        for p in procs:
            p.join()
        crashed = [p.name for p in procs if p.exitcode not in (0, None)]
        if crashed:
            _log.warning("worker(s) %s exited with an error; their running trials are settled on --resume",
                         ", ".join(crashed))
        counts = count_trials(load_study(config, run_dir).get_trials(deepcopy=False))
        return stop_reason(config, counts, deadline) or "workers finished"
