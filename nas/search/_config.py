"""``SearchConfig``: everything one search run needs, in one validated settings object per concern.

In the manner of Ray Tune's ``TuneConfig``/``RunConfig``: :class:`SpaceSettings` (what to search, under which
budgets), :class:`LatencyMeasurement`, :class:`SamplingSettings` (how many candidates, sampled how),
:class:`BackendSettings`, :class:`TrainingSettings` (data and the accuracy estimator) and :class:`RunSettings`
(where results go). Each field declares its command-line option, help and default once (its ``metadata``):
``python -m nas.search``'s options and a recipe's keys are generated from them, and :meth:`SearchConfig.create`
takes the same flat names. The config is stored in ``run.json`` (grouped, with a layout version) so ``--resume``
can check it is continuing the same search. Checks that need heavy imports or the hardware (does the space exist,
is the device present, does any member meet the budget) happen later, in :func:`nas.search.run_search`'s preflight.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from cvt import UserError

from .._settings import settings_from_dict
from ..cost import DTYPES
from ..proxy import GROWTHS
from ..metrics import COSTS, METRICS
from ._backend import BACKENDS

__all__ = ["SearchConfig", "SpaceSettings", "LatencyMeasurement", "SamplingSettings", "BackendSettings",
           "TrainingSettings", "PromotionSettings", "RunSettings",
           "GROUPS", "SAMPLERS", "SCHEDULERS", "LATENCY_MODES", "LAYOUT_VERSION", "ESTIMATOR_OPTIONS",
           "parse_duration", "BUDGETED", "option_fields"]

# Samplers Optuna ships that handle categorical, multi-objective and constrained studies (checked with
# Optuna 5.0). QMC is left out: on categorical-only spaces it falls back to random sampling; CMA-ES
# handles neither categorical parameters nor several objectives.
SAMPLERS = {
    "tpe": "TPE (Optuna's default), learns the feasible region from the constraints",
    "nsga2": "NSGA-II genetic search with constrained domination",
    "nsga3": "NSGA-III, reference-point variant of NSGA-II for 3+ objectives",
    "random": "uniform random sampling (the baseline)",
    "gp": "Gaussian-process Bayesian optimisation with constraint models (about 1 s per sample)",
}

LATENCY_MODES = ("measured", "predicted")
SCREENING_SHARE = 0.5  # of --timeout, for a screening estimator's first rung; its confirmations get the rest
DEFAULT_TRIALS = {False: 8, True: 1000}  # by whether the estimator screens: trainings, or supernet scores
# Settings that belong to one estimator (the supernet's); they reach it in nas.estimators.SearchContext.options.
ESTIMATOR_OPTIONS = ("supernet_range", "supernet_recipe")
# Early stopping of proxy trainings (Ray backend): ASHA on per-epoch proxy accuracy, or none.
SCHEDULERS = ("none", "asha")
LAYOUT_VERSION = 2  # of the config in run.json: 1 was one flat mapping, 2 is one mapping per settings group

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*(s|sec|m|min|h)?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}


def parse_duration(text: str | float | int | None) -> float | None:
    """``"900"``, ``"15m"``, ``"1.5h"`` -> seconds; None stays None."""
    if text is None:
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _DURATION.match(str(text))
        if not match:
            raise UserError(f"timeout {text!r}: give seconds or a duration like 900, 15m or 1.5h")
        seconds = float(match.group(1)) * _UNIT_SECONDS[(match.group(2) or "").lower() or None]
    if not seconds > 0 or math.isinf(seconds):
        raise UserError(f"timeout {text!r}: must be a positive duration")
    return seconds


def _slug(text: str) -> str:
    """``cvt13-nas`` -> ``cvt-13-nas``, ``4GFLOPs`` -> ``4gflops``, ``my_space.yaml`` -> ``my-space``."""
    text = Path(text).stem if text.endswith((".yaml", ".yml")) else text
    text = re.sub(r"(?<=[a-z])(?=\d)", "-", text.lower())
    return re.sub(r"[^a-z0-9.]+", "-", text).strip("-.")


def _gmacs_range(value: Any) -> tuple[float, float]:
    """``"2,4"`` or ``[2, 4]`` -> ``(2.0, 4.0)`` GMACs."""
    parts = re.split(r"[,\s]+", value.strip()) if isinstance(value, str) else list(value)
    try:
        low, high = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise UserError(f"--supernet-range {value!r}: give LOW,HIGH in GMACs, e.g. 2,4") from None
    if not (0 <= low < high and math.isfinite(high)):
        raise UserError(f"--supernet-range {value!r}: LOW must be at least 0 and below HIGH (GMACs), e.g. 2,4")
    return low, high


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{name} = {value!r}: expected an integer >= {minimum}")
    return value


def _opt(default: Any, help: str, *, metavar: str | None = None, choices: Any = None, kind: type | None = None,
         flag: bool = False, option: str | None = None, factory: Any = None) -> Any:
    """A settings field that declares its command-line option (``--<name>`` unless ``option`` is given)."""
    meta = {"help": help, "metavar": metavar, "choices": choices, "kind": kind, "flag": flag, "option": option}
    if factory is not None:
        return field(default_factory=factory, metadata=meta, hash=False)
    return field(default=default, metadata=meta)


class _Group:
    """Shared by the settings groups: validated on construction, replaced and (de)serialised by field."""

    TITLE = ""

    def replace(self, **changes: Any) -> Any:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value


@dataclass(frozen=True)
class SpaceSettings(_Group):
    """What to search and under which hard budgets (a candidate over any budget is never estimated)."""

    TITLE = "what to search, under which budgets"

    space: str = _opt("cvt", "search space: cvt, cvt13-nas, cct or a space YAML file", metavar="NAME")
    budget: str | None = _opt(None, METRICS["macs"].budget_help, metavar=METRICS["macs"].budget_metavar)
    latency_budget: str | None = _opt(None, METRICS["latency"].budget_help, metavar=METRICS["latency"].budget_metavar)
    params_budget: str | None = _opt(None, METRICS["params"].budget_help, metavar=METRICS["params"].budget_metavar)
    objectives: tuple[str, ...] = _opt((), f"comma-separated, from {', '.join(METRICS)}; accuracy is maximised, "
                                           f"costs minimised (default accuracy,latency with a latency budget, else "
                                           f"accuracy,macs)", metavar="LIST")
    # How costs are taken: at the deployment resolution and class count, not the proxy's.
    resolution: int | None = _opt(None, "input size at which MACs and latency are computed (default: the space's, "
                                        "224 for CvT)", metavar="PX", kind=int)
    num_classes: int = _opt(1000, "classifier width used for costs: the deployment task's; proxy training uses the "
                                  "dataset's classes", metavar="N", kind=int)

    def __post_init__(self) -> None:
        objectives = self.objectives
        if isinstance(objectives, str):
            objectives = [o for o in re.split(r"[,\s]+", objectives) if o]
        objectives = tuple(str(o).lower() for o in (objectives or ()))
        unknown = [o for o in objectives if o not in METRICS]
        if unknown:
            raise UserError(f"unknown objective {unknown[0]!r}; use any of {', '.join(METRICS)} "
                            f"(comma-separated, accuracy included)")
        if objectives and "accuracy" not in objectives:
            raise UserError(f"objectives {','.join(objectives)} leave out accuracy: the search estimates "
                            f"candidates to rank them by accuracy, so include it (e.g. accuracy,macs)")
        if len(set(objectives)) != len(objectives):
            raise UserError(f"objectives {','.join(objectives)} name one objective twice")
        object.__setattr__(self, "objectives", objectives)
        if not isinstance(self.space, str) or not self.space:
            raise UserError("--space is empty: give a space name (cvt, cvt13-nas, cct) or a YAML file")
        _positive_int("--num-classes", self.num_classes)
        if self.resolution is not None:
            _positive_int("--resolution", self.resolution)
        self.budgets  # noqa: B018  (parses every budget: a typo fails here, before anything runs)

    @property
    def budgets(self) -> dict[str, Any]:
        """Parsed budgets by metric (``"macs"``, ``"latency"``, ``"params"``) -> :class:`nas.budget.Budget`."""
        from nas.budget import parse_budget

        out = {}
        for m in BUDGETED:
            text = getattr(self, m.budget_field)
            if text is None:
                continue
            try:
                out[m.name] = parse_budget(str(text), kind=m.budget_kind)
            except UserError as err:
                raise UserError(f"{m.budget_option} {text!r}: {err}") from None
        return out

    @property
    def objective_names(self) -> tuple[str, ...]:
        """The objectives in order; accuracy first."""
        if self.objectives:
            return ("accuracy",) + tuple(o for o in self.objectives if o != "accuracy")
        return ("accuracy", "latency" if self.latency_budget is not None else "macs")

    @property
    def uses_latency(self) -> bool:
        """Latency is needed: as a budget or as an objective."""
        return self.latency_budget is not None or "latency" in self.objectives

    @property
    def slug(self) -> str:
        """``<space>-<budgets>``, e.g. ``cvt-13-nas-4gflops``: the default study name and export prefix."""
        parts = [_slug(str(t)) for t in (getattr(self, m.budget_field) for m in BUDGETED) if t]
        return "-".join([_slug(self.space)] + (parts or ["unconstrained"]))


@dataclass(frozen=True)
class LatencyMeasurement(_Group):
    """How latency is taken, when a budget or an objective needs it."""

    TITLE = "latency"

    latency: str = _opt("measured", "measured on the device, or predicted by --latency-predictor",
                        choices=LATENCY_MODES)
    latency_predictor: str | None = _opt(None, "predictor JSON built for the device (nas.cost)", metavar="FILE")
    device: str = _opt("cpu", metavar="DEVICE", help="device latency is measured on: cpu, cuda or cuda:N; "
                                                     "measurement never overlaps proxy training on the same device")
    batch_size: int = _opt(1, "batch size of the latency measurement", metavar="N", kind=int)
    dtype: str = _opt("fp32", "dtype of the latency measurement", choices=tuple(DTYPES))
    latency_threads: int | None = _opt(None, "CPU threads of a latency measurement on the CPU (default: the CPUs "
                                             "this process may use)", metavar="N", kind=int)

    def __post_init__(self) -> None:
        if self.latency not in LATENCY_MODES:
            raise UserError(f"--latency {self.latency!r}: use measured or predicted")
        if self.dtype not in DTYPES:
            raise UserError(f"--dtype {self.dtype!r}: use one of {', '.join(DTYPES)}")
        _positive_int("--batch-size", self.batch_size)
        if self.latency_threads is not None:
            _positive_int("--latency-threads", self.latency_threads)


@dataclass(frozen=True)
class SamplingSettings(_Group):
    """How many candidates, for how long, sampled how."""

    TITLE = "search"

    trials: int | None = _opt(None, "candidates to estimate at the first rung (proxy trainings, or supernet scores); "
                                    "over-budget samples and promotions to higher rungs do not count (the start-up "
                                    "line says what promotion adds) "
                                    f"(default {DEFAULT_TRIALS[False]}; {DEFAULT_TRIALS[True]} with --estimator "
                                    f"supernet)",
                              metavar="N", kind=int)
    timeout: float | None = _opt(None, "wall time for the whole search, e.g. 900, 15m, 2h: new candidates stop after "
                                       "the first rung's share of it (printed at start), promotions after all of "
                                       "it; running trainings finish", metavar="TIME")
    max_untrained: int | None = _opt(None, "stop after N over-budget or duplicate samples (default "
                                           "max(200, 10 x trials))", metavar="N", kind=int)
    sampler: str = _opt("tpe", "all of these handle several objectives and the budget constraints (Optuna 5): "
                               + "; ".join(f"{k}: {v}" for k, v in SAMPLERS.items())
                               + ". Not offered: qmc (random on categorical spaces), cmaes (no categorical, one "
                                 "objective)", metavar="NAME", choices=tuple(SAMPLERS))
    seed: int = _opt(0, "seed of the sampler and of proxy training", metavar="N", kind=int)
    workers: int = _opt(1, "parallel estimates (processes sharing the study); each gets its share of CPU threads "
                           "or its own GPU", metavar="N", kind=int)

    def __post_init__(self) -> None:
        object.__setattr__(self, "timeout", parse_duration(self.timeout))
        if self.sampler not in SAMPLERS:
            raise UserError(f"unknown sampler {self.sampler!r}; use one of {', '.join(SAMPLERS)}")
        if self.trials is not None:
            _positive_int("--trials", self.trials)
        _positive_int("--workers", self.workers)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise UserError(f"--seed {self.seed!r}: expected an integer >= 0")
        if self.max_untrained is not None:
            _positive_int("--max-untrained", self.max_untrained)

    @property
    def untrained_limit(self) -> int:
        """How many over-budget or duplicate samples the search tolerates before it stops."""
        return self.max_untrained or max(200, 10 * self.trials)


@dataclass(frozen=True)
class BackendSettings(_Group):
    """What runs the trials (``--backend ray``: the Ray options; see docs/USAGE.md)."""

    TITLE = "backend (Ray options apply with --backend ray; see docs/USAGE.md)"

    backend: str = _opt("optuna", "optuna: local processes; ray: Ray Tune trials on a local or joined Ray cluster, "
                                  "watched in the Ray dashboard", choices=tuple(BACKENDS))
    ray_address: str | None = _opt(None, "join a running cluster: auto (the one 'ray start' left on this machine) or "
                                         "HOST:PORT of the head node; default: start a local Ray bound to 127.0.0.1 "
                                         "and print its dashboard URL", metavar="ADDR")
    cpus_per_trial: float | None = _opt(None, "CPUs each trial reserves, fractions allowed (default: the cluster's "
                                              "CPUs / --workers)", metavar="N", kind=float)
    gpus_per_trial: float = _opt(0.0, "GPUs each trial reserves and trains on; fractions share a GPU (0: train on "
                                      "CPU)", metavar="N", kind=float)
    scheduler: str = _opt("none", "asha: stop weak trials early on per-epoch proxy accuracy (they are recorded as "
                                  "pruned, with their epochs, and never enter the Pareto front)", choices=SCHEDULERS)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise UserError(f"unknown backend {self.backend!r}; use one of {', '.join(BACKENDS)}")
        if self.scheduler not in SCHEDULERS:
            raise UserError(f"--scheduler {self.scheduler!r}: use one of {', '.join(SCHEDULERS)}")
        if self.backend != "ray":
            defaults = BackendSettings.__dataclass_fields__
            given = [_option(defaults[name]) for name in ("ray_address", "cpus_per_trial", "gpus_per_trial",
                                                          "scheduler")
                     if getattr(self, name) != defaults[name].default]
            if given:
                raise UserError(f"{', '.join(given)} only apply with --backend ray")
            return
        for option, value in (("--cpus-per-trial", self.cpus_per_trial), ("--gpus-per-trial", self.gpus_per_trial)):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0 or (option == "--cpus-per-trial" and value == 0):
                raise UserError(f"{option} {value!r}: expected a number >= 0 (fractions share a device)"
                                if option == "--gpus-per-trial" else f"{option} {value!r}: expected a number > 0")
        if self.gpus_per_trial > 1 and self.gpus_per_trial != int(self.gpus_per_trial):
            raise UserError(f"--gpus-per-trial {self.gpus_per_trial:g}: above 1 it must be a whole number of GPUs")


@dataclass(frozen=True)
class TrainingSettings(_Group):
    """The data and how a candidate's accuracy is estimated (``proxy``: ``ProxyConfig`` field overrides)."""

    TITLE = "data and accuracy estimation"

    data: str = _opt("auto", metavar="NAME", help="auto (CIFAR-10 if found, else sklearn digits with a warning), "
                                                  "cifar10, digits, synthetic, imagefolder:PATH, fashion-mnist:PATH")
    data_dir: str | None = _opt(None, "data root for auto/cifar10 (default $CVT_NAS_DATA)", metavar="DIR")
    proxy: Mapping[str, Any] = _opt(None, "", factory=dict)  # --proxy-<field> options, from ProxyConfig's fields
    estimator: str = _opt("proxy", "how candidates are ranked: proxy (a short training with the --proxy-* settings), "
                                   "supernet (accuracy inherited from a weight-sharing supernet, trained once and "
                                   "cached; the best --confirm candidates then train at the top rung) or a "
                                   "training-free score: naswot, synflow, grad_norm, dss (docs/performance.md says how "
                                   "well each ranks)", metavar="NAME")
    supernet_range: tuple[float, float] | None = _opt(
        None, "with --estimator supernet: the MACs range its supernet covers, LOW,HIGH in GMACs (default: a cached "
              "supernet of this space and data whose range holds the MACs budget, else half the budget to the "
              "budget)", metavar="LOW,HIGH")
    supernet_recipe: str = _opt("auto", "with --estimator supernet: how its supernet is trained: cpu, gpu, auto (by "
                                        "the training device) or a YAML file of nas.supernet.SupernetRecipe fields",
                                metavar="NAME|YAML")
    train_device: str = _opt("auto", "cpu, cuda, cuda:N or auto: every visible GPU, else CPU", metavar="DEVICE")
    threads: int | None = _opt(None, "CPU threads shared by all workers (default: the CPUs this process may use: "
                                     "affinity and cgroup quota)", metavar="N", kind=int)

    def __post_init__(self) -> None:
        from nas.proxy import ProxyConfig

        object.__setattr__(self, "proxy", dict(self.proxy or {}))
        known = {f.name for f in dataclasses.fields(ProxyConfig) if f.metadata.get("option")}
        unknown = sorted(set(self.proxy) - known)
        if unknown:
            raise UserError(f"unknown proxy setting {unknown[0]!r}; known: {', '.join(sorted(known))}")
        ProxyConfig(**self.proxy)  # each value checked now, before anything is loaded or written
        if self.threads is not None:
            _positive_int("--threads", self.threads)
        if self.supernet_range is not None:
            object.__setattr__(self, "supernet_range", _gmacs_range(self.supernet_range))
        if self.estimator != "supernet":
            fields = TrainingSettings.__dataclass_fields__
            given = [_option(fields[name]) for name in ESTIMATOR_OPTIONS
                     if getattr(self, name) != fields[name].default]
            if given:
                raise UserError(f"{', '.join(given)} only apply with --estimator supernet")


@dataclass(frozen=True)
class PromotionSettings(_Group):
    """Multi-fidelity promotion (successive halving by non-dominated rank) and the self-check at the end."""

    TITLE = "multi-fidelity promotion and self-check (docs/USAGE.md, 'Promotion')"

    # By measurement (docs/performance.md, "Ranking oracle"): in the oracle's band the 4x rung's top-1 was the
    # oracle's best where the plain proxy's was no better than a random pick; 8x added nothing for its cost.
    rungs: tuple[int, ...] = _opt((1, 2, 4), "budgets of the rungs as multiples of the proxy's, comma-separated: "
                                             "every candidate trains at the first, the best continue to the next "
                                             "from their own checkpoint ('1' turns promotion off)", metavar="LIST")
    rung_growth: str = _opt("data", "what a higher rung adds: data (the multiple of the proxy's images, one "
                                    "nested subset) or epochs (more passes over the proxy's images)",
                            choices=GROWTHS)
    reduction: int = _opt(2, "the best 1/N of each rung (by non-dominated rank on accuracy and the cost "
                             "objectives) continue to the next", metavar="N", kind=int)
    confirm: int | None = _opt(None, "with a screening estimator (supernet): the best K of its estimates (by "
                                     "non-dominated rank) train standalone at the top rung, and only they enter the "
                                     "front and the exports (default 3)", metavar="K", kind=int)
    self_check: int | None = _opt(None, "at the end, retrain the top K architectures and a baseline at the top rung "
                                        "under another seed and say whether the pick holds; 0 turns it off "
                                        "(default: up to 3, as many as add at most half the run's compute)",
                                  metavar="K", kind=int)
    baseline: str | None = _opt(None, "the self-check's baseline: a preset name (cvt_13) or a model YAML; shrunk in "
                                      "width to fit the budgets (default: the space's reference member)",
                                metavar="NAME|YAML")

    def __post_init__(self) -> None:
        from nas.proxy import RungSchedule

        rungs = self.rungs
        if isinstance(rungs, (int, float)) and not isinstance(rungs, bool):
            rungs = [rungs]
        if isinstance(rungs, str):
            try:
                rungs = [int(r) for r in re.split(r"[,\s]+", rungs.strip()) if r]
            except ValueError:
                raise UserError(f"--rungs {self.rungs!r}: give increasing whole multiples, e.g. 1,2,4") from None
        object.__setattr__(self, "rungs", tuple(rungs))
        try:
            RungSchedule(self.rungs, growth=self.rung_growth)
        except UserError as err:
            raise UserError(f"--rungs/--rung-growth: {err}") from None
        _positive_int("--reduction", self.reduction, minimum=2)
        if self.confirm is not None:
            _positive_int("--confirm", self.confirm)
        if self.self_check is not None:
            _positive_int("--self-check", self.self_check, minimum=0)
        if self.baseline is not None and (not isinstance(self.baseline, str) or not self.baseline):
            raise UserError("--baseline is empty: give a preset name (e.g. cvt_13) or a model YAML file")

    @property
    def schedule(self) -> Any:
        """The :class:`nas.proxy.RungSchedule` of these settings."""
        from nas.proxy import RungSchedule

        return RungSchedule(self.rungs, growth=self.rung_growth)

    @property
    def promotes(self) -> bool:
        return len(self.rungs) > 1

    @property
    def screening(self) -> bool:
        """The first rung is a screening estimator's (``confirm`` is set only for one): scores, not trainings."""
        return self.confirm is not None

    @property
    def ladder(self) -> tuple[int, ...]:
        """The rungs architectures train at, in turn: every rung, or with ``confirm`` the first (the screening
        estimate) and the top (standalone training)."""
        top = len(self.rungs) - 1
        return (0, top) if self.screening else tuple(range(top + 1))

    def quota(self, cohort: int) -> int:
        """How many of ``cohort`` architectures finished at one rung of the ladder go on to the next."""
        return min(self.confirm, cohort) if self.screening else cohort // self.reduction

    def quotas(self, candidates: int) -> list[int]:
        """How many architectures train at each rung of the :attr:`ladder` when ``candidates`` did at the first."""
        counts = [candidates]
        for _ in self.ladder[1:]:
            counts.append(self.quota(counts[-1]))
        return counts

    def budget_of(self, rung: int) -> int:
        """A rung's budget as a multiple of the proxy's (0 for a screening estimate, which trains nothing)."""
        return 0 if rung == 0 and self.screening else self.rungs[rung]

    def units(self, per_rung: Sequence[int]) -> float:
        """Compute in units of one first-rung training when ``per_rung[r]`` architectures trained at rung ``r``
        (a promotion adds the difference of its rung's budget and the budget of the rung below it in the ladder;
        screening estimates count as free)."""
        counts = list(per_rung) + [0] * (len(self.rungs) - len(per_rung))
        ladder = self.ladder
        return counts[0] * self.budget_of(0) + sum(
            counts[hi] * (self.rungs[hi] - self.budget_of(lo)) for lo, hi in zip(ladder, ladder[1:]))

    def compute(self, candidates: int) -> float:
        """The compute of a whole search of ``candidates`` first-rung estimates (:meth:`units` of the quotas)."""
        per_rung = [0] * len(self.rungs)
        for rung, count in zip(self.ladder, self.quotas(candidates)):
            per_rung[rung] = count
        return self.units(per_rung)

    @property
    def first_share(self) -> float:
        """The first rung's share of the timeout (for any number of candidates): its share of the compute, or
        half for a screening estimator (its estimates are cheap but many)."""
        if self.screening:
            return SCREENING_SHARE
        share, alive = self.rungs[0], 1.0
        for lo, hi in zip(self.rungs, self.rungs[1:]):
            alive /= self.reduction
            share += alive * (hi - lo)
        return self.rungs[0] / share


@dataclass(frozen=True)
class RunSettings(_Group):
    """Where results go, and whether an earlier run is continued."""

    TITLE = "run directory"

    out: str | None = _opt(None, "run directory (default runs/<study name>)", metavar="DIR")
    study_name: str | None = _opt(None, "study name (default <space>-<budget>, e.g. cvt-13-nas-4gflops)",
                                  metavar="NAME")
    storage: str | None = _opt(None, "Optuna storage: a journal file path or an sqlite:/// URL (default "
                                     "RUN_DIR/study.journal, safe with several worker processes)", metavar="URL")
    resume: bool = _opt(False, "continue the study in the run directory (same settings; --trials, --timeout and "
                               "--workers may change)", flag=True)


# Group name in SearchConfig -> its class, in the order options are listed.
GROUPS: dict[str, type] = {"space": SpaceSettings, "latency": LatencyMeasurement, "sampling": SamplingSettings,
                           "backend": BackendSettings, "training": TrainingSettings, "promotion": PromotionSettings,
                           "run": RunSettings}


def option_fields() -> dict[str, tuple[str, dataclasses.Field]]:
    """Flat setting name (the option without ``--``, with underscores) -> (group, field)."""
    return {f.name: (group, f) for group, cls in GROUPS.items() for f in dataclasses.fields(cls)}


def _option(f: dataclasses.Field) -> str:
    return f.metadata.get("option") or "--" + f.name.replace("_", "-")


@dataclass(frozen=True)
class SearchConfig:
    """One search: one validated settings object per concern.

    Build it from flat setting names (the options without ``--``, as a recipe's keys) with :meth:`create`, or from
    the groups themselves.

    Example:
        >>> cfg = SearchConfig.create(space="cvt13-nas", budget="4GFLOPs", trials=8, data="synthetic")
        >>> cfg.space.objective_names, cfg.sampling.trials
        (('accuracy', 'macs'), 8)
    """

    space: SpaceSettings = field(default_factory=SpaceSettings)
    latency: LatencyMeasurement = field(default_factory=LatencyMeasurement)
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    backend: BackendSettings = field(default_factory=BackendSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    promotion: PromotionSettings = field(default_factory=PromotionSettings)
    run: RunSettings = field(default_factory=RunSettings)

    def __post_init__(self) -> None:
        from nas.estimators import screens
        from nas.proxy import zero_cost

        # A score at initialisation has no rungs: left to the default, its search promotes nothing.
        if self.training.estimator in zero_cost.SCORES and self.promotion.rungs == PromotionSettings().rungs:
            object.__setattr__(self, "promotion", self.promotion.replace(rungs=(1,)))
        screening = screens(self.training.estimator)
        if self.sampling.trials is None:
            object.__setattr__(self, "sampling", self.sampling.replace(trials=DEFAULT_TRIALS[screening]))
        if screening:
            if not self.promotion.promotes:
                raise UserError(f"--estimator {self.training.estimator} confirms its picks by training them at the "
                                f"top rung: give --rungs with at least two rungs (e.g. 1,2,4)")
            if self.promotion.confirm is None:
                object.__setattr__(self, "promotion", self.promotion.replace(confirm=3))
        elif self.promotion.confirm is not None:
            raise UserError(f"--confirm applies to a screening estimator (--estimator supernet); --estimator "
                            f"{self.training.estimator} promotes by --reduction")
        # Checks across groups.
        promotion = self.promotion
        if promotion.promotes and promotion.confirm is None and promotion.quotas(self.sampling.trials)[-1] < 1:
            need = promotion.reduction ** (len(promotion.rungs) - 1)
            raise UserError(f"--rungs {','.join(map(str, promotion.rungs))} with --reduction {promotion.reduction} "
                            f"needs at least {need} candidates for one to reach the top rung, and --trials is "
                            f"{self.sampling.trials}: raise --trials, or use fewer rungs (--rungs 1 turns promotion "
                            f"off)")
        if self.latency.latency == "predicted" and self.space.uses_latency and not self.latency.latency_predictor:
            raise UserError("--latency predicted needs --latency-predictor FILE (a predictor built for the "
                            "device, e.g. experiments/latency/cpu.json)")
        if self.backend.backend == "ray" and self.training.train_device != "auto":
            raise UserError("--train-device: with --backend ray trials train on CPU, or on GPUs with "
                            "--gpus-per-trial N (Ray assigns the devices)")
        if self.backend.scheduler == "asha" and self.promotion.promotes:
            raise UserError("--scheduler asha and promotion (--rungs) both decide which trainings continue: use "
                            "--rungs 1 with --scheduler asha, or --scheduler none")
        if self.backend.scheduler == "asha":
            if self.training.proxy.get("steps") is not None:
                raise UserError("--scheduler asha decides at epoch boundaries; --proxy-steps makes the number of "
                                "evaluations depend on the data: use --proxy-epochs instead")
            if self.training.proxy.get("epochs") == 1:
                raise UserError("--scheduler asha needs at least 2 proxy epochs to stop anything early "
                                "(--proxy-epochs 2 or more), or use --scheduler none")

    @classmethod
    def create(cls, **settings: Any) -> "SearchConfig":
        """From flat setting names (``space=``, ``budget=``, ``trials=``, ``proxy={...}``, ...)."""
        fields = option_fields()
        unknown = sorted(set(settings) - set(fields))
        if unknown:
            raise UserError(f"unknown search setting(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
        grouped: dict[str, dict[str, Any]] = {g: {} for g in GROUPS}
        for name, value in settings.items():
            grouped[fields[name][0]][name] = value
        return cls(**{g: GROUPS[g](**values) for g, values in grouped.items()})

    # ------------------------------------------------------------------ derived values
    @property
    def name(self) -> str:
        """The study name."""
        return self.run.study_name or self.space.slug

    @property
    def run_dir(self) -> Path:
        """The run directory: ``--out`` or ``runs/<study name>``."""
        return Path(self.run.out) if self.run.out else Path("runs") / self.name

    @property
    def directions(self) -> list[str]:
        return [METRICS[o].direction for o in self.space.objective_names]

    # ------------------------------------------------------------------ conversion
    def replace(self, **changes: Any) -> "SearchConfig":
        """A copy with flat settings changed (``trials=20``), each in its group."""
        fields = option_fields()
        unknown = sorted(set(changes) - set(fields))
        if unknown:
            raise UserError(f"unknown search setting(s) {', '.join(unknown)}")
        groups = {g: getattr(self, g) for g in GROUPS}
        for name, value in changes.items():
            group = fields[name][0]
            groups[group] = groups[group].replace(**{name: value})
        return SearchConfig(**groups)

    def flat(self) -> dict[str, Any]:
        """Every setting by its flat name."""
        return {name: value for g in GROUPS for name, value in getattr(self, g).to_dict().items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping: one mapping per group, and the layout version."""
        return {"layout": LAYOUT_VERSION, **{g: getattr(self, g).to_dict() for g in GROUPS}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SearchConfig":
        """Inverse of :meth:`to_dict`; a layout-1 mapping (one flat mapping, from cvt-nas before the groups) is
        read by its flat names. Unknown keys are an error naming the known ones."""
        if "layout" not in data:
            return cls.create(**data)
        if data["layout"] != LAYOUT_VERSION:
            raise UserError(f"search settings of layout {data['layout']!r}; this cvt-nas reads layouts 1 and "
                            f"{LAYOUT_VERSION}: upgrade cvt-nas to resume this run")
        unknown = sorted(set(data) - set(GROUPS) - {"layout"})
        if unknown:
            raise UserError(f"unknown search settings group(s) {', '.join(unknown)}; known: {', '.join(GROUPS)}")
        return cls(**{g: settings_from_dict(GROUPS[g], data.get(g, {}), f"search {g}") for g in GROUPS})

    # Settings that may change between a run and its --resume (more trials, more workers, more time).
    RESUMABLE = ("trials", "timeout", "max_untrained", "workers", "threads", "train_device", "resume", "out",
                 "storage", "ray_address", "cpus_per_trial", "gpus_per_trial", "self_check", "baseline", "confirm")

    def differences(self, other: "SearchConfig") -> list[str]:
        """Flat names of the settings that make ``other`` a different search (for --resume checks).

        Settings are compared by what they mean: ``6G`` and ``6GFLOPs`` are one budget, and objectives left
        to their default equal the same objectives given explicitly.
        """
        mine, theirs = self._meaning(), other._meaning()
        return [k for k in mine if k not in self.RESUMABLE and mine[k] != theirs[k]]

    def _meaning(self) -> dict[str, Any]:
        flat = self.flat()
        budgets = self.space.budgets
        flat.update({m.budget_field: budgets.get(m.name) for m in BUDGETED})
        flat["objectives"] = self.space.objective_names
        return flat


# The metrics with a budget, in the order of their SpaceSettings fields (the order of names and listings).
_FIELD_ORDER = [f.name for f in dataclasses.fields(SpaceSettings)]
BUDGETED = tuple(sorted((m for m in COSTS if m.budget_field), key=lambda m: _FIELD_ORDER.index(m.budget_field)))
