"""Trial bookkeeping both backends share: counting, stop reasons, duplicates, failures, interrupted trials.

A worker that is killed leaves its trial RUNNING; :func:`recover_interrupted` (run at ``--resume``, under
the run lock) finishes it from what it recorded, or fails it as interrupted and queues its parameters
again. Every backend counts with :func:`count_trials` and stops on :func:`stop_reason`, so ``--trials``,
``--timeout`` and the untrained-sample guard mean the same whichever backend runs the search.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._config import SearchConfig
from ._records import PROMOTION_KEYS, is_trained, training_recorded, values_from_attrs
from ._rundir import open_storage
from ._samplers import keeps_values

if TYPE_CHECKING:
    import optuna

__all__ = ["load_study", "count_trials", "stop_reason", "find_trained", "requeue", "mark_interrupted", "fail",
           "recover_interrupted", "settle_worker", "tell"]


def load_study(config: SearchConfig, run_dir: Path, sampler=None) -> "optuna.Study":
    """The run directory's study, with ``sampler`` for asking."""
    import optuna

    return optuna.load_study(study_name=config.name, storage=open_storage(config.run.storage, run_dir), sampler=sampler)


def count_trials(trials: list["optuna.trial.FrozenTrial"]) -> dict[str, int]:
    """Counts that drive stopping and the progress display.

    ``trainings``: first-rung proxy trainings finished (trained, stopped early by a scheduler (``pruned``), or
    failed while training); ``untrained``: samples that trained nothing (over budget, duplicate, failed before
    training); ``costed``/``feasible``: samples whose cost was computed / within every budget; ``running``:
    first-rung trials in flight. Promotions to higher rungs are counted apart: ``promotions`` finished,
    ``promoting`` in flight, ``per_rung`` the architectures trained at each rung.
    """
    counts: dict[str, Any] = dict.fromkeys(("trainings", "trained", "pruned", "failed", "untrained", "duplicates",
                                            "running", "costed", "feasible", "interrupted", "promotions",
                                            "promoting"), 0)
    per_rung = [0]
    for t in trials:
        state, attrs = t.state.name, t.user_attrs
        status = attrs.get("status")
        rung = int(attrs.get("rung", 0))
        if rung > 0:  # a promotion: more compute for an architecture already counted, not a new candidate
            if state in ("RUNNING", "WAITING"):
                counts["promoting"] += state == "RUNNING"
            elif state == "COMPLETE" and status == "trained":
                counts["promotions"] += 1
                per_rung += [0] * (rung + 1 - len(per_rung))
                per_rung[rung] += 1
            elif status != "interrupted":
                counts["failed"] += 1
            continue
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
            per_rung[0] += 1
        elif state == "PRUNED" and status == "pruned":
            counts["trainings"] += 1
            counts["pruned"] += 1
        elif state == "FAIL":
            counts["failed"] += 1
            counts["trainings" if attrs.get("phase") == "training" else "untrained"] += 1
        else:
            counts["untrained"] += 1
            counts["duplicates"] += status == "duplicate"
    counts["per_rung"] = per_rung
    return counts


def stop_reason(config: SearchConfig, counts: dict[str, int], deadline: float | None) -> str | None:
    """Why no new trial should start, ``"wait"`` if one may once running trials finish, else None."""
    if counts["trainings"] >= config.sampling.trials:
        done = "candidates scored" if config.promotion.screening else "proxy trainings"
        return f"{counts['trainings']} {done} done"
    if deadline is not None and time.time() >= deadline:
        return "timeout reached"
    if counts["untrained"] >= config.sampling.untrained_limit:
        return (f"guard: {counts['untrained']} samples trained nothing (over budget, duplicates or failed before "
                f"training); the budget may be too tight for the space (raise it, or --max-untrained)")
    if counts["trainings"] + counts["running"] >= config.sampling.trials:
        return "wait"  # every remaining slot may be taken by a trial in flight
    return None


def find_trained(study: "optuna.Study", arch_id: str) -> tuple[int, list[float]] | None:
    """(number, objective values) of a trial that already trained ``arch_id``, or None."""
    for t in study.get_trials(deepcopy=False):
        if is_trained(t) and t.user_attrs.get("arch_id") == arch_id and not t.user_attrs.get("rung"):
            return t.number, list(t.values)
    return None


def requeue(study: "optuna.Study", trial: Any) -> bool:
    """Queue an interrupted trial's parameters again (priced and trained anew); whether it was queued.

    Only fully sampled trials can be replayed; a trial killed mid-sampling is simply sampled anew.
    """
    if not (trial.user_attrs.get("phase") and trial.params):
        return False
    promotion = {k: trial.user_attrs[k] for k in PROMOTION_KEYS if k in trial.user_attrs}
    study.enqueue_trial(dict(trial.params), user_attrs={"requeue_of": trial.number, **promotion})
    return True


def tell(study: "optuna.Study", trial: Any, values: list[float] | None) -> None:
    """End a trial with its objective values, or as PRUNED when ``values`` is None (an over-budget sample
    whose sampler learns from its constraints without values: :func:`nas.search._samplers.keeps_values`)."""
    import optuna

    if values is None:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    else:
        study.tell(trial, values)


def mark_interrupted(study: "optuna.Study", trial: Any) -> None:
    """Fail a RUNNING trial (of this or a dead process) as interrupted."""
    import optuna

    _set_attrs(study, trial, status="interrupted", failure="interrupted (the search was stopped or killed)")
    study.tell(trial.number, state=optuna.trial.TrialState.FAIL)


def _set_attrs(study: "optuna.Study", trial: Any, **attrs: Any) -> None:
    # Trial and FrozenTrial both carry their storage id; attributes must be set before the trial ends.
    for key, value in attrs.items():
        study._storage.set_trial_user_attr(trial._trial_id, key, value)


def recover_interrupted(config: SearchConfig, run_dir: Path) -> dict[str, int]:
    """Settle trials a killed search left RUNNING, so none is lost or run twice.

    A trial whose outcome was fully recorded (status set, or a training's whole result stored before it was
    marked done) is completed from its attributes; any other is failed as ``interrupted`` and its parameters
    queued again. Call only while holding the run lock (no worker is alive). Returns how many trials were
    completed and re-queued.
    """
    import optuna

    study = load_study(config, run_dir)
    done = requeued = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        status, phase = t.user_attrs.get("status"), t.user_attrs.get("phase")
        if status is None and phase == "training" and training_recorded(t.user_attrs):
            _set_attrs(study, t, phase="done", status="trained")  # killed between storing and marking
            status, phase = "trained", "done"
        if status == "trained" and phase == "done":
            study.tell(t.number, values_from_attrs(config.space.objective_names, t.user_attrs))
            done += 1
        elif status == "over_budget" and phase == "done":
            tell(study, t.number, values_from_attrs(config.space.objective_names, t.user_attrs)
                 if keeps_values(config.sampling.sampler) else None)
            done += 1
        elif status == "pruned" and phase == "done":  # Ray backend with --scheduler asha
            study.tell(t.number, state=optuna.trial.TrialState.PRUNED)
            done += 1
        else:
            mark_interrupted(study, t)
    queued = {t.user_attrs.get("requeue_of") for t in study.get_trials(deepcopy=False)}
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
        if t.user_attrs.get("status") == "interrupted" and t.number not in queued:
            requeued += requeue(study, t)
    return {"completed": done, "requeued": requeued}


def settle_worker(study: "optuna.Study", worker: int) -> int:
    """Fail the RUNNING trials of a dead worker process as interrupted and queue them again; how many.

    Call under the run's claim lock: workers name themselves on a trial under it as they ask, so a RUNNING trial
    without a worker then belongs to a worker that died between the two (it is settled too)."""
    import optuna

    running = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
               if t.user_attrs.get("worker", worker) == worker]
    for t in running:
        mark_interrupted(study, t)
        requeue(study, t)
    return len(running)


def fail(study: "optuna.Study", trial: "optuna.Trial", reason: str) -> None:
    """End ``trial`` as failed, with ``reason`` (one line) in its records."""
    import optuna

    trial.set_user_attr("failure", reason)
    trial.set_user_attr("status", "failed")
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
