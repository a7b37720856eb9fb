"""Latency predictor: a lookup table of measured building blocks, summed and calibrated.

A model is cut into operators whose latency does not depend on the rest of the model. CvT: each stage's
conv token embedding (input channels, width, kernel, stride, input grid), each transformer block
(width, heads, MLP width, strides, kernel, projection method, cls token, token grid) and the head. CCT:
the tokenizer, each encoder layer (width, heads, MLP width, tokens) and the pooling head. The
table holds one measured median per distinct operator (once-for-all / FBNet style); a model's table sum
is then mapped to its latency by a linear calibration ``scale * sum + offset`` fitted on whole models
measured by the same protocol (it absorbs what the blocks leave out: reshapes, the cls-token concat,
cache effects between blocks).

Every build measures further random architectures that the calibration never saw and reports the
share predicted within +-10% of the measurement and Kendall's tau (ranking quality). For spaces with
more distinct operators than ``max_entries``, unmeasured operators fall back to a non-negative linear
model of their MACs and tensor sizes fitted on the table (reported as ``table_coverage``).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from cvt import ConfigError, UserError

from ..devices import available_cpus
from ._family import Operator, costs_named, costs_of
from ._latency import (LatencySettings, check_device, default_cache_dir, device_signature, measure,
                       measure_latency, summarize)

__all__ = ["LatencyPredictor", "Operator", "operators", "accuracy_report"]

logger = logging.getLogger(__name__)

FORMAT = "cvt-nas latency table"
FORMAT_VERSION = 1


def operators(config: Any, resolution: int, num_classes: int = 1000) -> list[Operator]:
    """The operators a config runs at a square ``resolution``, in forward order."""
    try:
        costs = costs_of(config)
    except ConfigError:
        raise UserError(f"no latency table for {type(config).__name__}; its model family has no cost model") from None
    return costs.operators(config, resolution, num_classes)


def _operator_call(op: Operator, settings: LatencySettings) -> Callable[[], Any]:
    return costs_named(op.recipe[0]).build_operator(op, settings)


def _kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def accuracy_report(measured_ms: Sequence[float], predicted_ms: Sequence[float]) -> dict[str, float]:
    """``within_10pct`` (share with |pred/meas - 1| <= 0.1), ``kendall_tau``, ``mape_pct``,
    ``max_error_pct`` and ``n``."""
    m, p = np.asarray(measured_ms, dtype=float), np.asarray(predicted_ms, dtype=float)
    err = np.abs(p / m - 1.0)
    return {"n": int(len(m)), "within_10pct": float(np.mean(err <= 0.10)),
            "kendall_tau": _kendall_tau(m, p) if len(m) > 1 else float("nan"),
            "mape_pct": float(100 * err.mean()), "max_error_pct": float(100 * err.max())}


def _distinct_configs(space: Any, count: int, rng: np.random.Generator, exclude: set[str]) -> list:
    configs, seen = [], set(exclude)
    for _ in range(50 * count):
        if len(configs) == count:
            break
        config = space.sample_config(rng)
        if config.arch_id() not in seen:
            seen.add(config.arch_id())
            configs.append(config)
    return configs


class LatencyPredictor:
    """Predicted latency (ms) of one forward pass under fixed settings, from a measured table.

    Build once per device and settings (``python -m nas.latency build``), save to JSON, load anywhere.

    Example:
        >>> pred = LatencyPredictor.load("experiments/latency/cpu_cvt13-nas.json")  # doctest: +SKIP
        >>> pred.predict(preset("cvt_13"))  # doctest: +SKIP
        243.1
    """

    def __init__(self, *, entries: dict[str, dict], calibration: dict[str, float], settings: dict,
                 signature: dict, space: str = "", fallback: dict[str, list[float]] | None = None,
                 report: dict | None = None, measurements: dict | None = None):
        self.entries = entries
        self.calibration = calibration
        self.settings = settings
        self.signature = signature
        self.space = space
        self.fallback = fallback or {}
        self.report = report or {}
        self.measurements = measurements or {}

    # ------------------------------------------------------------------ prediction
    @property
    def device_name(self) -> str:
        return self.signature.get("device_name", "")

    def _ops(self, config: Any) -> list[Operator]:
        return operators(config, self.settings["resolution"], self.settings.get("num_classes", 1000))

    def _op_ms(self, op: Operator) -> float:
        entry = self.entries.get(op.key)
        if entry is not None:
            return entry["ms"]
        coef = self.fallback.get(op.kind)
        if coef is None:
            raise UserError(f"operator {op.key!r} is not in the latency table and there is no fallback for "
                            f"{op.kind} operators; rebuild the table for this space")
        return float(np.dot(coef, op.features))

    def table_sum(self, config: Any) -> float:
        """Uncalibrated sum of the config's operators (ms)."""
        return sum(self._op_ms(op) for op in self._ops(config))

    def coverage(self, config: Any) -> float:
        """Share of the config's operators measured in the table (the rest use the fallback model)."""
        ops = self._ops(config)
        return sum(op.key in self.entries for op in ops) / len(ops)

    def predict(self, config: Any) -> float:
        """Predicted latency in ms at the table's batch size, resolution, dtype and threads."""
        return self.calibration["scale"] * self.table_sum(config) + self.calibration["offset_ms"]

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": FORMAT_VERSION, "space": self.space, "settings": self.settings,
                "signature": self.signature, "calibration": self.calibration, "fallback": self.fallback,
                "report": self.report, "entries": self.entries, "measurements": self.measurements}

    def save(self, path: str | Path) -> Path:
        """Write the table, calibration, report and all measurements as JSON."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "LatencyPredictor":
        """Read a table written by :meth:`save` (``UserError`` if missing or not a latency table)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except OSError as err:
            raise UserError(f"cannot read latency table {path}: {err.strerror or err}") from None
        except ValueError:
            raise UserError(f"{path} is not JSON; expected a table written by `python -m nas.latency build`") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise UserError(f"{path} is not a cvt-nas latency table")
        if data.get("version") != FORMAT_VERSION:
            raise UserError(f"{path} has table version {data.get('version')}; this cvt-nas reads version "
                            f"{FORMAT_VERSION}: rebuild it with `python -m nas.latency build`")
        return cls(entries=data["entries"], calibration=data["calibration"], settings=data["settings"],
                   signature=data["signature"], space=data.get("space", ""), fallback=data.get("fallback"),
                   report=data.get("report"), measurements=data.get("measurements"))

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, space: Any, *, device: str = "cpu", batch_size: int = 1, resolution: int | None = None,
              dtype: str = "fp32", channels_last: bool = False, threads: int | None = None, fit: int = 30,
              holdout: int = 30, seed: int = 0, coverage: int = 2000, max_entries: int = 1000, warmup: int = 5,
              repeats: int = 30, model_warmup: int = 3, model_repeats: int = 15, clock: str = "wall",
              num_classes: int = 1000,
              cache_dir: str | Path | None = None, use_cache: bool = True,
              progress: Callable[[str], None] | None = None) -> "LatencyPredictor":
        """Measure a space's operators and calibrate on whole models; report held-out accuracy.

        Args:
            space: a ``SearchSpace`` or its name / YAML path.
            device, batch_size, resolution, dtype, channels_last, threads: the measurement settings
                (resolution defaults to the space's ``img_size``).
            fit: random architectures measured whole to fit the calibration.
            holdout: further random architectures, never fitted, to report accuracy on.
            seed: seeds every random choice of the build.
            coverage: random architectures (not measured) whose operators make up the table; with the
                fit set they cover every operator of small spaces such as ``cvt13-nas``.
            max_entries: most operators to measure; beyond it a random subset is measured and the rest
                use the fallback model.
            warmup, repeats: protocol for each operator; model_warmup, model_repeats: for whole models.
            clock: ``"wall"`` or ``"cpu"`` (see ``measure_latency``; for busy shared CPUs).
            num_classes: classifier width.
            cache_dir, use_cache: the whole-model measurement cache (see ``measure_latency``).
            progress: called with one line per step (the CLI prints it).

        Returns:
            The predictor; ``report`` holds the held-out accuracy, table size, coverage and build time.
        """
        from search_spaces import get_space

        started = time.perf_counter()
        say = progress or logger.info
        space = get_space(space)
        check_device(device)
        size = resolution or getattr(space, "img_size", 224)
        settings = LatencySettings(device=device, batch_size=batch_size, resolution=size, dtype=dtype,
                                   channels_last=channels_last, threads=threads, warmup=warmup, repeats=repeats,
                                   clock=clock)
        if fit < 2 or holdout < 2:
            raise UserError("a latency table needs fit >= 2 and holdout >= 2 architectures")
        cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        rng = np.random.default_rng(seed)
        fit_configs = _distinct_configs(space, fit, rng, set())
        holdout_configs = _distinct_configs(space, holdout, rng, {c.arch_id() for c in fit_configs})
        if len(fit_configs) < 2 or len(holdout_configs) < 2:
            raise UserError(f"space {space.name!r} is too small for {fit} + {holdout} distinct architectures")

        # The table: operators of the fit set first, then those of a coverage sample.
        ops: dict[str, Operator] = {}
        for config in fit_configs + [space.sample_config(rng) for _ in range(coverage)]:
            for op in operators(config, size, num_classes):
                ops.setdefault(op.key, op)
        chosen = _choose(ops, fit_configs, size, num_classes, max_entries, rng)
        if len(chosen) < len(ops):
            say(f"{len(ops)} distinct operators; measuring {len(chosen)} (max_entries), the rest use the fallback")
        entries: dict[str, dict] = {}
        for n, key in enumerate(chosen, 1):
            op = ops[key]
            median, iqr = summarize(measure(_operator_call(op, settings), settings, cache_dir=cache)[0])
            entries[key] = {"kind": op.kind, "ms": median, "iqr_ms": iqr, "features": list(op.features)}
            say(f"[table {n}/{len(chosen)}] {key}: {median:.3f} ms (IQR {iqr:.3f})")
        predictor = cls(entries=entries, calibration={"scale": 1.0, "offset_ms": 0.0},
                        settings={**settings.to_dict(), "threads": settings.threads or available_cpus(),
                                  "num_classes": num_classes},
                        signature=device_signature(device, settings.threads), space=space.name,
                        fallback=_fit_fallback(entries))

        # Whole models, fit and held-out interleaved so slow drifts in machine load hit both alike.
        measured: dict[str, float] = {}
        order = [("fit", c) for c in fit_configs] + [("holdout", c) for c in holdout_configs]
        for n, j in enumerate(rng.permutation(len(order)), 1):
            role, config = order[j]
            result = measure_latency(config, device=device, batch_size=batch_size, resolution=size, dtype=dtype,
                                     channels_last=channels_last, threads=threads, warmup=model_warmup,
                                     repeats=model_repeats, clock=clock, num_classes=num_classes, cache_dir=cache,
                                     use_cache=use_cache)
            measured[config.arch_id()] = result.median_ms
            say(f"[models {n}/{len(order)}] {role} {config.arch_id()}: {result.median_ms:.2f} ms "
                f"(IQR {result.iqr_ms:.2f}){' cached' if result.cached else ''}")

        predictor._calibrate(fit_configs, holdout_configs, measured)
        predictor.report.update(entries=len(entries), distinct_operators=len(ops),
                                build_time_s=round(time.perf_counter() - started, 1), seed=seed)
        return predictor

    def _calibrate(self, fit_configs: list, holdout_configs: list, measured: dict[str, float]) -> None:
        """Fit ``scale * table_sum + offset`` on the fit set; record both sets and the held-out accuracy."""
        sums = np.array([self.table_sum(c) for c in fit_configs])
        y = np.array([measured[c.arch_id()] for c in fit_configs])
        scale, offset = np.polyfit(sums, y, 1)
        if scale <= 0:  # noise swamped the fit: fall back to a pure ratio
            scale, offset = float(y.sum() / sums.sum()), 0.0
        self.calibration = {"scale": float(scale), "offset_ms": float(offset)}

        def rows(configs: list) -> list[dict]:
            return [{"arch_id": c.arch_id(), "measured_ms": measured[c.arch_id()], "predicted_ms": self.predict(c),
                     "table_sum_ms": self.table_sum(c), "config": c.to_spec()} for c in configs]

        def accuracy(rows: list[dict]) -> dict[str, float]:
            return accuracy_report([r["measured_ms"] for r in rows], [r["predicted_ms"] for r in rows])

        self.measurements = {"fit": rows(fit_configs), "holdout": rows(holdout_configs)}
        self.report = {"holdout": accuracy(self.measurements["holdout"]), "fit": accuracy(self.measurements["fit"]),
                       "table_coverage": float(np.mean([self.coverage(c) for c in holdout_configs]))}


def _choose(ops: dict[str, Operator], fit_configs: list, size: int, num_classes: int, max_entries: int,
            rng: np.random.Generator) -> list[str]:
    """Keys to measure: all of them, or (beyond ``max_entries``) the fit set's plus a random rest."""
    keys = list(ops)
    if len(keys) <= max_entries:
        return keys
    first = list(dict.fromkeys(op.key for c in fit_configs for op in operators(c, size, num_classes)))
    rest = [k for k in keys if k not in set(first)]
    keep = set(first[:max_entries]) | {str(k) for k in rng.permutation(rest)[:max(0, max_entries - len(first))]}
    return [k for k in keys if k in keep]


def _fit_fallback(entries: dict[str, dict]) -> dict[str, list[float]]:
    """Per kind, non-negative least squares of measured ms on the operator features."""
    from scipy.optimize import nnls

    out = {}
    for kind in ("embed", "block", "head"):
        rows = [e for e in entries.values() if e["kind"] == kind]
        if not rows:
            continue
        x = np.array([r["features"] for r in rows])
        y = np.array([r["ms"] for r in rows])
        scale = np.maximum(np.abs(x).max(axis=0), 1e-12)  # columns differ by orders of magnitude
        coef, _ = nnls(x / scale, y)
        out[kind] = (coef / scale).tolist()
    return out
