"""Trainings decided before any of them starts, trained side by side on the CPU.

A one-worker search samples candidates in a fixed order (the sampler sees each result before it proposes the next),
so its first rung runs one training at a time. The promotions of one rung, though, are chosen together once the
rung below is closed, and the self-check's trainings are chosen together at the end: running them side by side
cannot change which architectures train or what the search finds. Proxy trainings are small models at 32 px that
use two threads less than twice as well as one, so on a CPU ``P`` processes with ``1/P`` of the threads each
finish such a batch sooner than one process with all of them. Each process's thread count follows from the
settings and the machine alone, so the same command on the same machine gives the same accuracies.
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
from pathlib import Path
from typing import Any, Iterator, Sequence

from .._cpu import available_cpus
from ..devices import worker_device
from ._config import SearchConfig

__all__ = ["side_by_side", "train_side_by_side", "train_job", "die_with_parent"]


def side_by_side(config: SearchConfig, trainings: int) -> int:
    """How many processes train ``trainings`` independent trainings: one per CPU thread the search may use, at most
    one per training; 1 (in this process) for a GPU training device or a single thread."""
    if trainings < 2 or worker_device(config.training.train_device, 0) != "cpu":
        return 1
    return max(1, min(config.training.threads or available_cpus(), trainings))


def die_with_parent() -> None:
    """Linux: the kernel kills this process when the search process dies (even by kill -9)."""
    import sys

    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def train_side_by_side(config: SearchConfig, run_dir: Path, jobs: Sequence[dict[str, Any]], *, processes: int,
                       resolution: int | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Train ``jobs`` in ``processes`` fresh processes at a time, each with its share of the search's threads.

    Each job is ``{"family", "model", "rung", "seed", "directory"}`` (a config family name and dict, the rung to
    train at, the seed, the checkpoint directory: a killed job resumes from it). Yields ``(index, {"accuracy",
    "wall_time_s"})`` as each finishes. A failed training raises ``nas.proxy.TrainingFailed`` (an error in a
    process, ``RuntimeError``) once the others are stopped; so does Ctrl-C, after which checkpoints keep what
    they held.
    """
    from nas.proxy import TrainingFailed

    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch thread pools
    shared = config.replace(workers=processes).to_dict()  # each process's Evaluator takes threads / processes
    waiting = list(enumerate(jobs))
    running: dict[int, tuple[Any, Any]] = {}
    try:
        while waiting or running:
            while waiting and len(running) < processes:
                index, job = waiting.pop(0)
                receive, send = ctx.Pipe(duplex=False)
                process = ctx.Process(target=_train_job, name=f"nas-training-{index}",
                                      args=(send, shared, str(run_dir), resolution, job, os.getpid()))
                process.start()
                send.close()
                running[index] = (process, receive)
            multiprocessing.connection.wait([r for _, r in running.values()])
            for index, (process, receive) in list(running.items()):
                try:
                    if not receive.poll():
                        continue
                    status, value = receive.recv()
                except EOFError:  # the process died without a word (killed, out of memory)
                    process.join()
                    status, value = "error", f"exit code {process.exitcode}"
                process.join()
                del running[index]
                if status == "failed":
                    raise TrainingFailed(value)
                if status == "error":
                    raise RuntimeError(f"training {index} of {len(jobs)} side by side failed: {value}")
                yield index, value
    finally:
        for process, _ in running.values():
            process.kill()
            process.join()


def train_job(evaluator: Any, job: dict[str, Any]) -> dict[str, float]:
    """One job of :func:`train_side_by_side`, trained by ``evaluator`` in this process."""
    import cvt

    model = cvt.family_named(job["family"]).config_cls.from_dict(job["model"])
    result = evaluator.estimate(model, rung=job["rung"], seed=job["seed"], directory=Path(job["directory"]))
    return {"accuracy": float(result.accuracy), "wall_time_s": float(result.wall_time_s)}


def _train_job(send: Any, config_dict: dict[str, Any], run_dir: str, resolution: int | None, job: dict[str, Any],
               parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the search process's to handle: it stops us
    die_with_parent()
    if os.getppid() != parent:  # the parent died before prctl took effect
        return
    import warnings

    import nas  # noqa: F401  (torchvision fix before timm)
    from nas.proxy import TrainingFailed

    from ._objective import Evaluator

    warnings.simplefilter("ignore")
    evaluator = Evaluator(SearchConfig.from_dict(config_dict), Path(run_dir), resolution=resolution)
    try:
        send.send(("ok", train_job(evaluator, job)))
    except TrainingFailed as err:
        send.send(("failed", err.reason))
    except Exception as err:  # noqa: BLE001 - reported to the search process in one line
        send.send(("error", f"{type(err).__name__}: {err}"))
    finally:
        evaluator.close()
        send.close()
