"""The Optuna backend: N worker processes sharing the study storage (one in-process worker for N=1, whose
promotions, chosen a rung at a time, then train side by side in processes of their own: ``_parallel.py``).

Each worker loops ask -> evaluate -> tell. Before asking, it takes the run directory's claim lock and decides
from the stored trials (``_promotion.next_step``) whether to sample a new candidate, promote one to the next
rung, wait or stop, so ``--trials N`` means exactly N first-rung trainings however many workers race for them;
over-budget and duplicate samples do not use up that count, and promotions come on top. Counting,
stopping and interrupted trials are the shared bookkeeping of ``_trials.py``.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

from ._config import SearchConfig
from ._objective import Evaluator, OptunaObjective
from ._records import failure_reason
from ._parallel import die_with_parent, side_by_side
from ._rundir import claim_lock
from ._samplers import derive_seed, make_sampler
from ._promotion import deadlines, next_step
from ._trials import fail, find_trained, load_study, mark_interrupted, requeue, settle_worker, tell

__all__ = ["OptunaBackend", "run_worker", "PROMOTIONS_NEXT"]

_log = logging.getLogger(__name__)

_WAIT_S = 1.0  # poll interval while other workers' trials decide whether a training slot is left
PROMOTIONS_NEXT = "promotions next"
_MAX_RESTARTS = 3  # a worker slot whose process keeps dying (e.g. each candidate runs out of memory) stays empty


def run_worker(config: SearchConfig, run_dir: Path, *, worker: int = 0, deadline: float | None = None,
               sampling_deadline: float | None = None, resolution: int | None = None, dataset: Any = None,
               on_update: Callable[[], None] | None = None, until_promotions: bool = False) -> str:
    """Sample or promote, evaluate and tell until a stop reason applies; returns it.

    Args:
        config: the search.
        run_dir: run directory (storage and locks).
        worker: index of this worker (seed, GPU, thread share).
        deadline: ``time.time()`` after which no trial starts.
        sampling_deadline: after which no new candidate starts (promotions may, until ``deadline``).
        resolution: deployment resolution for costs.
        dataset: the loaded dataset, when the caller has it already.
        on_update: called after every trial and proxy epoch (progress display).
        until_promotions: return :data:`PROMOTIONS_NEXT` instead of starting the first promotion (the caller
            trains them side by side).
    """
    existing = len(load_study(config, run_dir).get_trials(deepcopy=False))
    sampling = config.sampling
    sampler = make_sampler(sampling.sampler, derive_seed(sampling.seed, worker, existing), sampling.trials)
    study = load_study(config, run_dir, sampler)
    evaluator = Evaluator(config, run_dir, worker=worker, dataset=dataset, resolution=resolution)
    objective = OptunaObjective(evaluator, lambda arch_id: find_trained(study, arch_id), on_epoch=on_update)
    try:
        while True:
            with claim_lock(run_dir):
                step = next_step(config, study.get_trials(deepcopy=False), deadline, sampling_deadline)
                if until_promotions and step.action in ("promote", "resume"):
                    return PROMOTIONS_NEXT
                if step.action == "promote":
                    promotion = step.promotion
                    study.enqueue_trial(dict(promotion.source.params), user_attrs=promotion.user_attrs())
                trial = study.ask() if step.action in ("sample", "promote", "resume") else None
                if trial is not None:  # still under the lock: a trial is never RUNNING without its worker
                    trial.set_user_attr("worker", worker)
            if step.action == "wait":
                time.sleep(_WAIT_S)
                continue
            if step.action == "stop":
                return step.reason
            try:
                values = objective(trial)
            except KeyboardInterrupt:
                mark_interrupted(study, trial)
                requeue(study, trial)
                raise
            except Exception as err:  # noqa: BLE001 - any failure of one candidate must not stop the search
                _log.debug("trial %d failed", trial.number, exc_info=True)
                fail(study, trial, failure_reason(err))
            else:
                tell(study, trial, values)
            if on_update is not None:
                on_update()
    finally:
        evaluator.close()


def _worker_process(config_dict: dict[str, Any], run_dir: str, worker: int, deadlines: tuple[float | None, ...],
                    resolution: int | None, parent: int) -> None:
    die_with_parent()
    if os.getppid() != parent:  # the parent died before prctl took effect
        return
    import warnings

    import nas  # noqa: F401  (torchvision fix before timm)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.basicConfig(level=logging.ERROR)
    warnings.simplefilter("ignore")
    try:
        run_worker(SearchConfig.from_dict(config_dict), Path(run_dir), worker=worker, deadline=deadlines[0],
                   sampling_deadline=deadlines[1], resolution=resolution)
    except KeyboardInterrupt:
        sys.exit(130)


class OptunaBackend:
    """Local processes sharing one Optuna study (a journal file in the run directory by default)."""

    def run(self, config: SearchConfig, run_dir: Path, *, resolution: int | None = None, dataset: Any = None,
            progress: Any = None) -> str:
        deadline, sampling_deadline = deadlines(config)
        update = progress.refresh if progress is not None else None
        if config.sampling.workers == 1:
            # One worker samples in a fixed order; the promotions of a rung, chosen together, train side by side.
            apart = side_by_side(config, config.promotion.quota(config.sampling.trials)) \
                if config.promotion.promotes else 1
            reason = run_worker(config, run_dir, deadline=deadline, sampling_deadline=sampling_deadline,
                                resolution=resolution, dataset=dataset, on_update=update, until_promotions=apart > 1)
            if reason != PROMOTIONS_NEXT:
                return reason
            config = config.replace(workers=apart)
        ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch thread pools

        def start(i: int) -> Any:
            p = ctx.Process(target=_worker_process, name=f"nas-worker-{i}",
                            args=(config.to_dict(), str(run_dir), i, (deadline, sampling_deadline), resolution,
                                  os.getpid()))
            p.start()
            return p

        procs = [start(i) for i in range(config.sampling.workers)]
        restarts = [0] * len(procs)

        def died(i: int) -> bool:  # dead by a signal or an error, and its slot not yet settled and refilled
            return not procs[i].is_alive() and procs[i].exitcode not in (0, None) and restarts[i] < _MAX_RESTARTS

        try:  # every worker may die at once (the OOM killer): the loop lasts until each death is settled
            while any(p.is_alive() or died(i) for i, p in enumerate(procs)):
                for i, p in enumerate(procs):
                    if not died(i):
                        continue
                    # Killed (out of memory, kill -9): its trial would stay RUNNING and keep the others
                    # waiting for it. Queue it again and let a fresh worker take the slot.
                    with claim_lock(run_dir):  # no worker is between asking and naming itself on a trial
                        settled = settle_worker(load_study(config, run_dir), i)
                    _log.warning("worker %d died (exit code %s); %d running trial(s) queued again%s", i, p.exitcode,
                                 settled, "" if restarts[i] + 1 == _MAX_RESTARTS else "; starting a new worker")
                    restarts[i] += 1
                    if restarts[i] < _MAX_RESTARTS:
                        procs[i] = start(i)
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
        step = next_step(config, load_study(config, run_dir).get_trials(deepcopy=False), deadline, sampling_deadline)
        if step.action == "stop":
            return step.reason
        if _MAX_RESTARTS in restarts:
            return (f"worker processes kept dying ({_MAX_RESTARTS} times in a slot; out of memory? lower --workers or "
                    f"the proxy's batch size), their trials queued again: --resume continues")
        return "workers finished"
