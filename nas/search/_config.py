"""``SearchConfig``: everything one search run needs, validated on construction.

It is built from the command line (``_options.py``) or directly from Python, stored as ``run.json`` in
the run directory (so ``--resume`` can check it is continuing the same search) and handed to a backend.
Checks that need heavy imports or the hardware (does the space exist, is the device present, does any
member meet the budget) happen later, in :func:`nas.search.run_search`'s preflight.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from cvt import UserError

from .._settings import settings_from_dict
from ..cost import DTYPES
from ..metrics import COSTS, METRICS
from ._backend import BACKENDS

__all__ = ["SearchConfig", "SAMPLERS", "SCHEDULERS", "LATENCY_MODES", "PROXY_OPTIONS",
           "parse_duration"]

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
# Early stopping of proxy trainings (Ray backend): ASHA on per-epoch proxy accuracy, or none.
SCHEDULERS = ("none", "asha")

# Proxy-training settings exposed as --proxy-<name>; each maps to the ProxyConfig field of that name.
PROXY_OPTIONS = {
    "epochs": (int, "training epochs per candidate"),
    "steps": (int, "optimizer steps per candidate instead of epochs"),
    "resolution": (int, "input size during proxy training (costs use --resolution)"),
    "batch_size": (int, "training batch size"),
    "lr": (float, "peak learning rate (AdamW)"),
    "weight_decay": (float, "AdamW weight decay"),
    "warmup_epochs": (float, "linear warm-up before the cosine schedule"),
    "mixup": (float, "Mixup alpha (0 disables)"),
    "cutmix": (float, "CutMix alpha (0 disables)"),
    "label_smoothing": (float, "label smoothing"),
    "train_subset": (int, "train on this many images, class-balanced ('all' for every image)"),
    "val_subset": (int, "evaluate on this many images ('all' for every image)"),
    "classes": (int, "use only the first N classes"),
    "width_mult": (float, "multiply every stage width by this during proxy training"),
}

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


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{name} = {value!r}: expected an integer >= {minimum}")
    return value


@dataclass(frozen=True)
class SearchConfig:
    """One search: space, budgets, objectives, proxy training, parallelism and where results go.

    Field names mirror the command-line options (``--latency-budget`` -> ``latency_budget``) and the
    keys of a recipe YAML. Budgets stay as the text the user wrote (``"4GFLOPs"``) so the run directory
    records exactly what was asked; :attr:`budgets` parses them.

    Example:
        >>> cfg = SearchConfig(space="cvt13-nas", budget="4GFLOPs", trials=8, data="synthetic")
        >>> cfg.objective_names
        ('accuracy', 'macs')
    """

    # What to search and under which hard budgets (a candidate over any budget is never trained).
    space: str = "cvt"
    budget: str | None = None  # MACs, e.g. "4GFLOPs" (FLOPs here are multiply-accumulates, as in the paper)
    latency_budget: str | None = None  # e.g. "2.5ms"
    params_budget: str | None = None  # e.g. "20M"
    objectives: tuple[str, ...] = ()  # empty: accuracy + latency with a latency budget, else accuracy + macs
    # How costs are taken: at the deployment resolution and class count, not the proxy's.
    resolution: int | None = None  # None: the space's own input size (224 for CvT spaces)
    num_classes: int = 1000
    latency: str = "measured"  # or "predicted" (needs latency_predictor)
    latency_predictor: str | None = None
    device: str = "cpu"  # where latency is measured
    batch_size: int = 1
    dtype: str = "fp32"
    latency_threads: int | None = None  # CPU threads of a latency measurement (None: all cores)
    # How many candidates, for how long, sampled how.
    trials: int = 10  # proxy trainings to run (over-budget samples do not count)
    timeout: float | None = None  # seconds; no new trial starts after it
    max_untrained: int | None = None  # guard: stop after this many over-budget/duplicate samples
    sampler: str = "tpe"
    seed: int = 0
    workers: int = 1
    backend: str = "optuna"
    # Ray backend only (--backend ray).
    ray_address: str | None = None  # None: start a local, loopback-only Ray; "auto" or HOST:PORT: join a cluster
    cpus_per_trial: float | None = None  # None: the cluster's CPUs / workers (fractions allowed)
    gpus_per_trial: float = 0.0  # fractions let trials share a GPU
    scheduler: str = "none"  # "asha": stop weak trials early on per-epoch proxy accuracy
    # Proxy training.
    data: str = "auto"
    data_dir: str | None = None
    proxy: Mapping[str, Any] = field(default_factory=dict, hash=False)  # ProxyConfig field overrides
    estimator: str = "proxy"  # how a candidate's accuracy is estimated (nas.estimators.ESTIMATORS)
    train_device: str = "auto"  # cpu, cuda, cuda:N or auto (every visible GPU, else CPU)
    threads: int | None = None  # CPU threads for all workers together (None: all cores)
    # Where results go.
    out: str | None = None
    study_name: str | None = None
    storage: str | None = None  # None: a journal file in the run directory
    resume: bool = False

    def __post_init__(self) -> None:
        objectives = self.objectives
        if isinstance(objectives, str):
            objectives = [o for o in re.split(r"[,\s]+", objectives) if o]
        objectives = tuple(str(o).lower() for o in (objectives or ()))
        unknown = [o for o in objectives if o not in METRICS]
        if unknown:
            raise UserError(f"unknown objective {unknown[0]!r}; use any of {', '.join(METRICS)} "
                            f"(comma-separated, accuracy included)")
        if self.scheduler == "asha" and objectives and "accuracy" not in objectives:
            raise UserError(f"--scheduler asha stops trials on per-epoch proxy accuracy, but objectives "
                            f"{','.join(objectives)} are costs fixed per architecture (no per-epoch metric): "
                            f"add accuracy to the objectives or use --scheduler none")
        if objectives and "accuracy" not in objectives:
            raise UserError(f"objectives {','.join(objectives)} leave out accuracy: the search trains "
                            f"candidates to rank them by accuracy, so include it (e.g. accuracy,macs)")
        if len(set(objectives)) != len(objectives):
            raise UserError(f"objectives {','.join(objectives)} name one objective twice")
        object.__setattr__(self, "objectives", objectives)
        object.__setattr__(self, "proxy", dict(self.proxy or {}))
        object.__setattr__(self, "timeout", parse_duration(self.timeout))
        self._validate()

    def _validate(self) -> None:
        if self.sampler not in SAMPLERS:
            raise UserError(f"unknown sampler {self.sampler!r}; use one of {', '.join(SAMPLERS)}")
        if self.backend not in BACKENDS:
            raise UserError(f"unknown backend {self.backend!r}; use one of {', '.join(BACKENDS)}")
        if self.latency not in LATENCY_MODES:
            raise UserError(f"--latency {self.latency!r}: use measured or predicted")
        if self.dtype not in DTYPES:
            raise UserError(f"--dtype {self.dtype!r}: use one of {', '.join(DTYPES)}")
        if self.latency == "predicted" and self.uses_latency and not self.latency_predictor:
            raise UserError("--latency predicted needs --latency-predictor FILE (a predictor built for the "
                            "device, e.g. experiments/latency/cpu.json)")
        if not isinstance(self.space, str) or not self.space:
            raise UserError("--space is empty: give a space name (cvt, cvt13-nas, cct) or a YAML file")
        _positive_int("--trials", self.trials)
        _positive_int("--workers", self.workers)
        _positive_int("--batch-size", self.batch_size)
        _positive_int("--num-classes", self.num_classes)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise UserError(f"--seed {self.seed!r}: expected an integer >= 0")
        for name, value in (("--resolution", self.resolution), ("--threads", self.threads),
                            ("--latency-threads", self.latency_threads),
                            ("--max-untrained", self.max_untrained)):
            if value is not None:
                _positive_int(name, value)
        unknown = sorted(set(self.proxy) - set(PROXY_OPTIONS))
        if unknown:
            raise UserError(f"unknown proxy setting {unknown[0]!r}; known: {', '.join(PROXY_OPTIONS)}")
        self._validate_ray()
        self.budgets  # noqa: B018  (parses every budget: a typo fails here, before anything runs)

    def _validate_ray(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise UserError(f"--scheduler {self.scheduler!r}: use one of {', '.join(SCHEDULERS)}")
        if self.backend != "ray":
            given = [option for option, value, default in (
                ("--ray-address", self.ray_address, None), ("--cpus-per-trial", self.cpus_per_trial, None),
                ("--gpus-per-trial", self.gpus_per_trial, 0.0), ("--scheduler", self.scheduler, "none"))
                if value != default]
            if given:
                raise UserError(f"{', '.join(given)} only apply with --backend ray")
            return
        if self.train_device != "auto":
            raise UserError("--train-device: with --backend ray trials train on CPU, or on GPUs with "
                            "--gpus-per-trial N (Ray assigns the devices)")
        for option, value, minimum in (("--cpus-per-trial", self.cpus_per_trial, 0.0),
                                       ("--gpus-per-trial", self.gpus_per_trial, 0.0)):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < minimum or (option == "--cpus-per-trial" and value == 0):
                raise UserError(f"{option} {value!r}: expected a number >= 0 (fractions share a device)"
                                if option == "--gpus-per-trial" else f"{option} {value!r}: expected a number > 0")
        if self.gpus_per_trial > 1 and self.gpus_per_trial != int(self.gpus_per_trial):
            raise UserError(f"--gpus-per-trial {self.gpus_per_trial:g}: above 1 it must be a whole number of GPUs")
        if self.scheduler == "asha":
            if self.proxy.get("steps") is not None:
                raise UserError("--scheduler asha decides at epoch boundaries; --proxy-steps makes the number of "
                                "evaluations depend on the data: use --proxy-epochs instead")
            if self.proxy.get("epochs") == 1:
                raise UserError("--scheduler asha needs at least 2 proxy epochs to stop anything early "
                                "(--proxy-epochs 2 or more), or use --scheduler none")

    # ------------------------------------------------------------------ derived values
    @property
    def budgets(self) -> dict[str, Any]:
        """Parsed budgets by kind (``"macs"``, ``"latency"``, ``"params"``) -> :class:`nas.budget.Budget`."""
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
    def directions(self) -> list[str]:
        return [METRICS[o].direction for o in self.objective_names]

    @property
    def uses_latency(self) -> bool:
        """Latency is needed: as a budget or as an objective."""
        return self.latency_budget is not None or "latency" in self.objectives

    @property
    def slug(self) -> str:
        """``<space>-<budgets>``, e.g. ``cvt-13-nas-4gflops``: the default study name and export prefix."""
        parts = [_slug(str(t)) for t in (getattr(self, m.budget_field) for m in BUDGETED) if t]
        return "-".join([_slug(self.space)] + (parts or ["unconstrained"]))

    @property
    def name(self) -> str:
        """The study name."""
        return self.study_name or self.slug

    @property
    def run_dir(self) -> Path:
        """The run directory: ``--out`` or ``runs/<study name>``."""
        return Path(self.out) if self.out else Path("runs") / self.name

    @property
    def untrained_limit(self) -> int:
        """How many over-budget or duplicate samples the search tolerates before it stops."""
        return self.max_untrained or max(200, 10 * self.trials)

    # ------------------------------------------------------------------ conversion
    def replace(self, **changes: Any) -> "SearchConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping of every field."""
        data = dataclasses.asdict(self)
        data["objectives"] = list(self.objectives)
        data["proxy"] = dict(self.proxy)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SearchConfig":
        return settings_from_dict(cls, data, "search")

    # Settings that may change between a run and its --resume (more trials, more workers, more time).
    RESUMABLE = ("trials", "timeout", "max_untrained", "workers", "threads", "train_device", "resume", "out",
                 "storage", "ray_address", "cpus_per_trial", "gpus_per_trial")

    def differences(self, other: "SearchConfig") -> list[str]:
        """Names of the fields that make ``other`` a different search (for --resume checks)."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [k for k in mine if k not in self.RESUMABLE and mine[k] != theirs[k]]


# The metrics with a budget, in the order of their SearchConfig fields (the order of names and listings).
_FIELD_ORDER = [f.name for f in dataclasses.fields(SearchConfig)]
BUDGETED = tuple(sorted((m for m in COSTS if m.budget_field), key=lambda m: _FIELD_ORDER.index(m.budget_field)))
