"""``run_search``: preflight checks, run directory, backend, outputs and exports, in that order.

The preflight rejects bad input before anything is written: unknown space or device, a budget that no
member of the space meets, a missing dataset, invalid proxy settings, or a ``--resume`` of a directory
that is not a cvt-nas run. Only then is the run directory created (or locked and repaired on resume).
"""
from __future__ import annotations

import logging
import os
import shlex
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cvt import UserError

from ..metrics import ANALYTIC_COSTS, METRICS
from ._backend import get_backend
from ._config import SearchConfig
from ._export import export_run
from ._outputs import study_rows, write_outputs
from ._progress import Progress, summarize
from ._records import pareto_rows
from ._rundir import CHECKPOINTS, JOURNAL, RunDir, open_storage
from ._self_check import default_k, resolve_baseline, run_self_check
from ._trials import recover_interrupted

__all__ = ["run_search", "SearchResult"]

_log = logging.getLogger("nas.search")


@dataclass
class SearchResult:
    """What a search produced (everything is also on disk in ``run_dir``)."""

    run_dir: Path
    stop_reason: str
    summary: dict[str, Any]  # counts, feasible fraction, best accuracy, Pareto size
    pareto: list[dict[str, Any]]  # pareto.csv rows, most accurate first
    outputs: dict[str, Path] = field(default_factory=dict)
    exports: list[Path] = field(default_factory=list)
    self_check: dict[str, Any] | None = None  # its trainings and verdict (also in run.json, self_check.json)

    @property
    def best(self) -> dict[str, Any] | None:
        """The most accurate trained trial within budget."""
        return self.pareto[0] if self.pareto else None


# ---------------------------------------------------------------------------- preflight
def _fmt(kind: str, value: float) -> str:
    from nas.budget import Budget

    return str(Budget(kind, value))


def _check_devices(config: SearchConfig) -> None:
    from nas.devices import check_device

    if config.space.uses_latency and config.latency.latency == "measured":
        try:
            check_device(config.latency.device)
        except UserError as err:
            raise UserError(f"--device: {err} (needed to measure latency)") from None
    if config.training.train_device != "auto":
        try:
            check_device(config.training.train_device, option="--train-device")
        except UserError as err:
            raise UserError(f"--train-device: {err}") from None


def _check_output(run_dir: Path) -> None:
    """The run directory can be made where ``--out`` points: its nearest existing folder is a writable folder."""
    existing = run_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise UserError(f"--out {run_dir}: {existing} is a file, not a folder; choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--out {run_dir}: {existing} is not writable (read-only or not yours); choose another --out")


def _check_predictor(config: SearchConfig, resolution: int) -> None:
    if not (config.space.uses_latency and config.latency.latency == "predicted"):
        return
    from nas.cost import LatencyPredictor, normalize_device

    latency = config.latency
    settings = LatencyPredictor.load(latency.latency_predictor).settings
    wanted = {"device": normalize_device(latency.device), "resolution": resolution, "batch_size": latency.batch_size,
              "dtype": latency.dtype}
    wrong = [f"{k} {settings.get(k)!r} (search: {v!r})" for k, v in wanted.items() if settings.get(k) != v]
    if wrong:
        raise UserError(f"latency predictor {config.latency.latency_predictor} was built for other settings: "
                        f"{', '.join(wrong)}; rebuild it (python -m nas.latency build) or match them")


def _check_budgets(config: SearchConfig, space: Any, resolution: int, evaluator: Any) -> None:
    """A budget below the space's smallest member is an error; one above its largest, a warning."""
    budgets = config.space.budgets
    for m in ANALYTIC_COSTS:
        if m.name not in budgets:
            continue

        def cost(c: Any, m: Any = m) -> float:
            return m.compute(c, resolution, config.space.num_classes)

        lo, hi = (cost(c) for c in space.extremes(cost))
        if lo > budgets[m.name].value:
            at = f" at {resolution}x{resolution}" if m.at_resolution else ""
            raise UserError(f"no architecture in space {space.name} has <= {budgets[m.name]}{at}; the smallest has "
                            f"{_fmt(m.name, lo)}; raise the budget or choose a space with smaller members")
        if hi <= budgets[m.name].value:
            _log.warning("warning: every architecture in space %s fits %s (the largest has %s), so the budget does "
                         "not bind: the search trades accuracy against the other objectives only", space.name,
                         budgets[m.name], _fmt(m.name, hi))
    if "latency" in budgets:
        # Latency grows with MACs in these spaces; the MAC extremes bracket it. The largest member is
        # only predicted, never measured: in a wide space it can cost hundreds of GMACs per image.
        macs = METRICS["macs"]
        smallest, largest = space.extremes(lambda c: macs.compute(c, resolution, config.space.num_classes))
        lo = evaluator.latency(smallest, resolution)[0]
        limit_ms = budgets["latency"].value * 1e3
        how = "predicted" if config.latency.latency == "predicted" else "measured"
        if lo > limit_ms:
            raise UserError(f"no architecture in space {space.name} has a latency <= {budgets['latency']} on "
                            f"{config.latency.device}: the smallest (by MACs) {how} {lo:.2f} ms at batch "
                            f"{config.latency.batch_size}, {resolution}x{resolution}, {config.latency.dtype}; "
                            f"raise the budget or use a faster device")
        hi = evaluator.latency(largest, resolution)[0] if config.latency.latency == "predicted" else None
        if hi is not None and hi <= limit_ms:
            _log.warning("warning: the largest architecture of space %s (by MACs) %s %.2f ms, within %s: the "
                         "latency budget does not bind", space.name, how, hi, budgets["latency"])


# ---------------------------------------------------------------------------- the search
def run_search(config: SearchConfig) -> SearchResult:
    """Run (or resume) a search and write its outputs and exports.

    Args:
        config: a validated :class:`SearchConfig`.

    Returns:
        A :class:`SearchResult`.

    Raises:
        UserError: bad input, found before the run directory is touched.

    Example:
        >>> from nas.search import SearchConfig, run_search  # doctest: +SKIP
        >>> result = run_search(SearchConfig.create(space="cvt13-nas", budget="4GFLOPs", trials=4,
        ...                                  data="synthetic", out="runs/demo"))  # doctest: +SKIP
        >>> result.best["arch_id"]  # doctest: +SKIP
    """
    run = RunDir(config.run_dir)
    if config.run.resume:
        run.check_resume(config)  # a foreign or corrupt directory stops here, untouched
        run.lock()  # no other search may use it from here on
        run.repair_journal(config.run.storage, check=run.check_complete)  # a damaged journal stops here, untouched
    else:
        _check_output(run.path)
        if run.path.exists() and (not run.path.is_dir() or any(run.path.iterdir())):
            run.create()  # raises: the directory already holds something

    ready = _preflight(config, run.path)
    study = _open_study(config, run, ready)
    _announce(config, ready.space, ready.resolution, ready.proxy, ready.dataset, run.path)
    _announce_promotion(config, ready)
    _warn_contention(config, ready)

    before = study.get_trials(deepcopy=False)
    progress = Progress(config, lambda: study.get_trials(deepcopy=False),
                        already=summarize(before, config)["trainings"])
    progress.mark_seen(before)
    reason, check = "interrupted", None
    try:
        reason = ready.backend.run(config, run.path, resolution=ready.resolution, dataset=ready.dataset,
                                   progress=progress)
        progress.close()
        if ready.self_check:
            check = run_self_check(config, run.path, study_rows(study), ready.evaluator, ready.baseline,
                                   ready.self_check)
            if check is not None:
                run.update_manifest(self_check={k: v for k, v in check.items() if k != "entries"} | {
                    "entries": [{k: v for k, v in e.items() if k != "config"} for e in check["entries"]]})
    finally:
        progress.close()
        try:
            result = _finish(config, study, run, reason, ready.resolution, check)
        finally:
            ready.evaluator.close()
            run.unlock()
    return result


@dataclass
class _Ready:
    """What the preflight found and built, handed on to the run."""

    space: Any
    resolution: int
    evaluator: Any
    dataset: Any
    proxy: Any
    backend: Any
    self_check: int = 0  # K, the architectures the self-check retrains (0: none)
    baseline: tuple[str, Any] | None = None  # its baseline: name and config, within every budget


def _preflight(config: SearchConfig, run_dir: Path) -> _Ready:
    """Every check that needs the space, the devices, the data or the backend; writes nothing."""
    from search_spaces import get_space

    from ._objective import Evaluator

    space = get_space(config.space.space)
    _check_devices(config)
    # Costs are taken at the deployment resolution; every decoded config carries the space's own.
    resolution = config.space.resolution or space.sample_config(0).img_size
    _check_predictor(config, resolution)
    evaluator = Evaluator(config, run_dir, resolution=resolution)
    _check_budgets(config, space, resolution, evaluator)
    dataset = evaluator.dataset
    proxy = evaluator.proxy_config()  # validates the proxy settings
    if not evaluator.estimator.reports_epochs and config.backend.scheduler == "asha":  # an unknown one stops here
        raise UserError(f"--scheduler asha stops trainings between epochs; --estimator {config.training.estimator} "
                        f"reports no epochs: use --estimator proxy or --scheduler none")
    trains = evaluator.estimator.supports_rungs
    if config.promotion.promotes and not trains:
        raise UserError(f"--estimator {config.training.estimator} does not train, so it has no rungs to promote "
                        f"candidates through: use --rungs 1")
    k = default_k(config, trains)
    if k and not trains:
        raise UserError(f"--self-check {k}: --estimator {config.training.estimator} does not train, so there is "
                        f"nothing to retrain under another seed; use --self-check 0")
    baseline = resolve_baseline(config, space, evaluator) if k else None  # one over every budget stops here
    backend = get_backend(config.backend.backend)
    if hasattr(backend, "preflight"):  # e.g. Ray: join the cluster and check its resources, before any file
        backend.preflight(config)
    # Last, once every check passed: what the workers will load (a supernet may train here; killed, the same
    # command resumes it, as no run directory exists yet).
    evaluator.estimator.build()
    return _Ready(space, resolution, evaluator, dataset, proxy, backend, k, baseline)


def _open_study(config: SearchConfig, run: RunDir, ready: _Ready) -> Any:
    """The run's study: loaded and settled on ``--resume``, else created with the run directory."""
    import optuna

    if config.run.resume:
        storage = open_storage(config.run.storage, run.path)
        try:
            study = optuna.load_study(study_name=config.name, storage=storage)
        except KeyError:
            raise UserError(f"{run.path} has no study named {config.name!r} in its storage; the run directory "
                            f"is corrupt or from another search (left as it is)") from None
        except Exception as err:  # noqa: BLE001 - any storage that cannot be read is reported, not repaired
            raise UserError(f"cannot read the study storage of {run.path} ({type(err).__name__}: {err}); the run "
                            f"directory was left as it is") from None
        run.check_complete(study.get_trials(deepcopy=False))  # storages that are not a journal file, too
        recovered = recover_interrupted(config, run.path)
        if any(recovered.values()):
            _log.info("resume: %d trial(s) completed from their records, %d interrupted trial(s) queued again",
                      recovered["completed"], recovered["requeued"])
        return study
    space = ready.space
    run.create()
    try:
        study = optuna.create_study(study_name=config.name, storage=open_storage(config.run.storage, run.path),
                                    directions=config.directions)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(config.space.objective_names))  # names in optuna-dashboard
    except Exception as err:  # noqa: BLE001 - any storage that cannot be used is the user's setting, in one line
        run.abandon()
        raise UserError(f"cannot use the study storage {config.run.storage or run.path / JOURNAL} "
                        f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); give a storage "
                        f"that can be written (--storage)") from None
    run.write_manifest(config, {"resolution": ready.resolution, "dataset": ready.dataset.description,
                                "proxy": ready.proxy.to_dict(), "estimator": ready.evaluator.estimator_info,
                                "space": {"name": space.name, "family": space.family,
                                          "cardinality": space.cardinality()}})
    return study


def _announce(config: SearchConfig, space: Any, resolution: int, proxy: Any, dataset: Any, run_dir: Path) -> None:
    budgets = ", ".join(str(b) for b in config.space.budgets.values()) or "none"
    _log.info("search space %s (%s architectures), budgets: %s; costs at %dx%d, %d classes", space.name,
              f"{space.cardinality():,}", budgets, resolution, resolution, config.space.num_classes)
    _log.info("objectives: %s; sampler %s, seed %d; %d %s, %d worker(s)",
              ", ".join(f"{o} ({d[:3]})" for o, d in zip(config.space.objective_names, config.directions)),
              config.sampling.sampler, config.sampling.seed, config.sampling.trials,
              "candidates scored" if config.promotion.screening else "proxy trainings",
              config.sampling.workers)
    if config.training.estimator == "proxy":
        _log.info("proxy training on %s (%d classes): %d epoch(s) at %dx%d, batch %d (the search's costs stay at "
                  "%dx%d)", dataset.name, dataset.num_classes, proxy.epochs, proxy.resolution, proxy.resolution,
                  proxy.batch_size, resolution, resolution)
    elif config.promotion.screening:
        _log.info("estimator %s on %s at %dx%d: candidates are scored by it, and the best %d trained at the top rung "
                  "(%dx the proxy budget) before they enter the front", config.training.estimator, dataset.name,
                  proxy.resolution, proxy.resolution, config.promotion.confirm, config.promotion.rungs[-1])
    else:
        _log.info("estimator %s on %s at %dx%d: candidates are ranked by this score, not trained",
                  config.training.estimator, dataset.name, proxy.resolution, proxy.resolution)
    target = shlex.quote(config.run.storage or str(run_dir / JOURNAL))  # pasted into a shell as printed
    _log.info("run directory: %s", run_dir)
    _log.info("watch live: optuna-dashboard %s --host 127.0.0.1   (then open http://127.0.0.1:8080)", target)


def _announce_promotion(config: SearchConfig, ready: _Ready) -> None:
    promotion, trials = config.promotion, config.sampling.trials
    if promotion.promotes and not promotion.screening:  # a screening estimator's confirmations: _announce
        counts = promotion.quotas(trials)
        _log.info("promotion: rungs %s of the proxy budget (%s); %s architectures train at each, the best 1/%d by "
                  "non-dominated rank going on: %.1fx the compute of %d first-rung trainings",
                  "/".join(f"{m}x" for m in promotion.rungs), promotion.rung_growth,
                  " -> ".join(map(str, counts)), promotion.reduction, promotion.compute(trials) / trials, trials)
    if promotion.promotes and config.sampling.timeout:
        _log.info("timeout: new candidates for the first %.0f%% of it, %s after that", 100 * promotion.first_share,
                  "confirmations" if promotion.screening else "promotions")
    if ready.self_check:
        _log.info("self-check at the end: the top %d and the baseline (%s) trained again at %dx the proxy budget "
                  "under seed %d (--self-check 0 turns it off)", ready.self_check, ready.baseline[0],
                  config.promotion.rungs[-1], config.sampling.seed + 1)
    elif config.promotion.self_check is None and ready.evaluator.estimator.supports_rungs:
        _log.info("self-check: off, as it would add more than half of this run's compute (--self-check 1 forces it)")


def _warn_contention(config: SearchConfig, ready: _Ready) -> None:
    """A warning naming the competing processes when the search's CPU threads and theirs exceed the CPUs."""
    from .._contention import shared_cpus_warning

    if ready.proxy.device.startswith("cuda"):  # GPU trainings: the CPUs are not the bottleneck
        return
    line = shared_cpus_warning(ready.evaluator.threads * config.sampling.workers)
    if line is not None:
        _log.warning("warning: %s", line)


def _finish(config: SearchConfig, study: Any, run: RunDir, reason: str, resolution: int,
            check: dict[str, Any] | None) -> SearchResult:
    trials = study.get_trials(deepcopy=False)
    rows = study_rows(study)
    front = pareto_rows(rows, config.space.objective_names)  # once: outputs, exports and summary share it
    outputs = write_outputs(rows, front, run.path, config.space.objective_names, config.space.budgets, resolution)
    exports = export_run(run.path, study=study, front=[r["number"] for r in front]) if front else []
    prune_checkpoints(run.path / CHECKPOINTS)
    return SearchResult(run_dir=run.path, stop_reason=reason, summary=summarize(trials, config, front), pareto=front,
                        outputs=outputs, exports=exports, self_check=check)


def prune_checkpoints(root: Path) -> None:
    """Keep each architecture's highest rung only: a later promotion continues from it, and lower rungs are
    never continued again (an unpromoted architecture's only checkpoint is its highest)."""
    if not root.is_dir():
        return
    for folder in (p for p in root.iterdir() if p.is_dir() and p.name != "self-check"):
        rungs = sorted(folder.glob("rung-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
        for path in rungs[:-1]:
            path.unlink(missing_ok=True)
