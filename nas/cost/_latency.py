"""Measured latency: one protocol for whole models and for the predictor's table entries.

Protocol (``PROTOCOL_VERSION``): build in eval mode on the device in the requested dtype (and memory
format), random input from a fixed seed, ``torch.inference_mode``; ``warmup`` untimed calls; then
``repeats`` timed calls, each on its own: CUDA events around every call on a GPU (read after one final
synchronise), ``time.perf_counter_ns`` on the CPU. The result is the **median** with the interquartile
range, plus what it was measured on (CPU/GPU model, driver, torch, threads) and under which settings.

``clock="cpu"`` (CPU, one thread only) times the process's CPU time (``time.process_time_ns``) instead
of the wall clock: on a machine shared with other jobs it leaves out the time the process waited for a
core, and on a quiet machine it equals the wall-clock latency. It is for building tables on busy
machines; the default is the wall clock.

Measuring needs the device to itself: anything else running on it (training, another measurement)
inflates the numbers. Measurements that share a cache directory take a per-device file lock, so two of
them never overlap; callers (the search backends) must also not measure while training runs on the same
device. Results are cached on disk by (architecture id, device signature, settings): a repeated request
is a file read. Cache directory: ``cache_dir`` argument, else ``$CVT_NAS_CACHE/latency``, else
``~/.cache/cvt-nas/latency``.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import hashlib
import json
import logging
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from cvt import UserError

from .._paths import default_cache_dir as cache_root
from ..devices import available_cpus, check_device, cpu_model, device_available, normalize_device

__all__ = ["LatencySettings", "LatencyResult", "measure_latency", "device_available", "check_device",
           "normalize_device", "device_signature", "PROTOCOL_VERSION", "DTYPES", "CLOCKS"]

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CLOCKS = ("wall", "cpu")
def _nvidia_driver(index: int) -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", "-i", str(index)],
                             capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def device_signature(device: str = "cpu", threads: int | None = None) -> dict[str, Any]:
    """Hardware and software a measurement on ``device`` depends on (JSON-ready).

    Keys: ``device``, ``device_name`` (GPU name or CPU model), ``cpu_model``, ``cpu_count``, ``machine``,
    ``torch``, ``python``, ``threads``; on CUDA also ``gpu_name``, ``gpu_capability``, ``gpu_memory_gb``,
    ``cuda``, ``cudnn``, ``driver``.
    """
    dev = check_device(device)
    cpu = cpu_model()
    sig: dict[str, Any] = {
        "device": str(dev), "device_name": cpu, "cpu_model": cpu, "cpu_count": os.cpu_count(),
        "machine": platform.machine(), "torch": torch.__version__, "python": platform.python_version(),
        "threads": threads or available_cpus(),
    }
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        sig.update(device_name=props.name, gpu_name=props.name, gpu_capability=f"{props.major}.{props.minor}",
                   gpu_memory_gb=round(props.total_memory / 2 ** 30, 1), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(), driver=_nvidia_driver(dev.index))
    return sig


# ---------------------------------------------------------------------------- settings and results
@dataclass(frozen=True)
class LatencySettings:
    """How to measure (validated). ``threads=None`` keeps torch's current CPU thread count."""

    device: str = "cpu"
    batch_size: int = 1
    resolution: int = 224
    dtype: str = "fp32"
    channels_last: bool = False
    threads: int | None = None
    warmup: int = 10
    repeats: int = 50
    clock: str = "wall"

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", normalize_device(self.device))
        for name in ("batch_size", "resolution", "repeats"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"latency {name} must be a positive integer, got {value!r}")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise UserError(f"latency warmup must be an integer >= 0, got {self.warmup!r}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise UserError(f"latency threads must be a positive integer, got {self.threads!r}")
        if self.dtype not in DTYPES:
            raise UserError(f"dtype {self.dtype!r} is not supported; use one of {', '.join(DTYPES)}")
        if self.clock not in CLOCKS:
            raise UserError(f"clock {self.clock!r} is unknown; use one of {', '.join(CLOCKS)}")
        if self.clock == "cpu" and (self.threads != 1 or self.device != "cpu"):
            raise UserError("clock 'cpu' measures CPU time, which equals latency only on the CPU with threads=1; "
                            "give --threads 1 --device cpu, or use the wall clock")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class LatencyResult:
    """One latency measurement.

    Attributes:
        median_ms: median time of one forward pass of the whole batch, milliseconds.
        iqr_ms: interquartile range of the timed calls (75th minus 25th percentile), milliseconds.
        repeats: number of timed calls.
        device_name: GPU name or CPU model.
        signature: hardware/software (see :func:`device_signature`).
        settings: the :class:`LatencySettings` as a dict (``threads`` resolved), plus ``num_classes``.
        arch_id: the architecture's id, or None for a module without a config (then nothing is cached).
        samples_ms: every timed call, in order.
        measured_at: ISO time; load_avg: 1-minute load average when it started (noise context).
        cached: True if this came from the disk cache.
    """

    median_ms: float
    iqr_ms: float
    repeats: int
    device_name: str
    signature: dict = field(compare=False)
    settings: dict = field(compare=False)
    arch_id: str | None = None
    samples_ms: tuple = field(default=(), compare=False, repr=False)
    measured_at: str = ""
    load_avg: float | None = None
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["samples_ms"] = list(self.samples_ms)
        out.pop("cached")
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, cached: bool = False) -> "LatencyResult":
        return cls(**{**data, "samples_ms": tuple(data.get("samples_ms", ())), "cached": cached})


# ---------------------------------------------------------------------------- timing
@contextlib.contextmanager
def _threads(threads: int | None) -> Iterator[int]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads or available_cpus())
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _device_lock(cache_dir: Path, device: torch.device) -> Iterator[None]:
    """Exclusive per-device file lock, so measurements sharing a cache never overlap."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock
        yield
        return
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / f".lock-{device.type}{device.index or 0}", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def time_callable(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int,
                  clock: str = "wall") -> list[float]:
    """Milliseconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                      for _ in range(repeats)]
            for start, end in events:
                start.record()
                fn()
                end.record()
            torch.cuda.synchronize(device)
            return [start.elapsed_time(end) for start, end in events]
        now = time.process_time_ns if clock == "cpu" else time.perf_counter_ns
        times = []
        for _ in range(repeats):
            t0 = now()
            fn()
            times.append((now() - t0) / 1e6)
        return times


def prepare(module: nn.Module, settings: LatencySettings) -> nn.Module:
    """``module`` in eval mode on the settings' device, dtype and memory format."""
    module = module.eval().to(device=settings.device, dtype=DTYPES[settings.dtype])
    if settings.channels_last:
        module = module.to(memory_format=torch.channels_last)
    return module


def make_input(shape: tuple[int, ...], settings: LatencySettings) -> torch.Tensor:
    """A seeded random input of ``shape`` for the settings (channels-last for 4-D inputs if asked)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).to(device=settings.device, dtype=DTYPES[settings.dtype])
    if settings.channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def default_cache_dir() -> Path:
    """``$CVT_NAS_CACHE/latency`` or ``~/.cache/cvt-nas/latency``."""
    return cache_root() / "latency"


def _cache_path(cache_dir: Path, arch_id: str, signature: dict, settings: dict) -> Path:
    # Threads is a setting; python/torch/device identity are the signature.
    blob = json.dumps({"protocol": PROTOCOL_VERSION, "arch": arch_id, "signature": signature,
                       "settings": settings}, sort_keys=True)
    return cache_dir / f"{arch_id}-{hashlib.sha1(blob.encode()).hexdigest()[:16]}.json"


def measure(fn: Callable[[], Any], settings: LatencySettings, *, cache_dir: Path) -> tuple[list[float], int]:
    """Time ``fn`` by the protocol under the device lock; returns (samples in ms, threads used)."""
    device = torch.device(settings.device)
    with _device_lock(cache_dir, device), _threads(settings.threads) as threads:
        return time_callable(fn, device, settings.warmup, settings.repeats, settings.clock), threads


def summarize(samples: list[float]) -> tuple[float, float]:
    """Median and interquartile range."""
    q25, q50, q75 = np.percentile(np.asarray(samples), [25, 50, 75])
    return float(q50), float(q75 - q25)


# ---------------------------------------------------------------------------- whole models
def measure_latency(config_or_model: Any, *, device: str = "cpu", batch_size: int = 1,
                    resolution: int | None = None, dtype: str = "fp32", channels_last: bool = False,
                    threads: int | None = None, warmup: int = 10, repeats: int = 50, clock: str = "wall",
                    num_classes: int = 1000, cache_dir: str | Path | None = None,
                    use_cache: bool = True) -> LatencyResult:
    """Latency of one forward pass of a batch, by the protocol in this module's docstring.

    Args:
        config_or_model: a model config (``CvTConfig``, ...) or an ``nn.Module`` (copied, not changed).
            Modules without a ``config`` attribute are measured but never cached.
        device: ``cpu``, ``cuda`` or ``cuda:N``; must exist (``UserError`` otherwise).
        batch_size: images per forward pass.
        resolution: square input size; defaults to the config's ``img_size``.
        dtype: ``fp32``, ``bf16`` or ``fp16`` (weights and input).
        channels_last: channels-last memory format for the model and input.
        threads: CPU threads during the measurement (restored afterwards); None keeps torch's setting.
        warmup: untimed calls first.
        repeats: timed calls.
        clock: ``"wall"`` (default) or ``"cpu"`` (process CPU time; CPU with threads=1 only, for busy
            shared machines).
        num_classes: classifier width when a config is given.
        cache_dir: cache directory (see module docstring for the default).
        use_cache: read and write the cache.

    Returns:
        A :class:`LatencyResult` (``cached=True`` when read from disk).

    Example:
        >>> from cvt import CvTConfig
        >>> r = measure_latency(CvTConfig(depths=(1, 1, 1)), resolution=64, repeats=5, warmup=1)
        >>> r.median_ms > 0
        True
    """
    from cvt import build_model

    config = config_or_model if not isinstance(config_or_model, nn.Module) else getattr(config_or_model,
                                                                                         "config", None)
    size = resolution or getattr(config, "img_size", None)
    if size is None:
        raise UserError("measure_latency: give resolution= for a module without a config")
    settings = LatencySettings(device=device, batch_size=batch_size, resolution=size, dtype=dtype,
                               channels_last=channels_last, threads=threads, warmup=warmup, repeats=repeats,
                               clock=clock)
    dev = check_device(device)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    signature = device_signature(settings.device, settings.threads)
    recorded = {**settings.to_dict(), "threads": signature["threads"], "num_classes": num_classes}
    arch_id = config.arch_id() if hasattr(config, "arch_id") else None
    path = _cache_path(cache, arch_id, signature, recorded) if arch_id and use_cache else None
    if path is not None and path.is_file():
        try:
            return LatencyResult.from_dict(json.loads(path.read_text()), cached=True)
        except (ValueError, TypeError):
            logger.warning("ignoring unreadable latency cache file %s", path)

    if isinstance(config_or_model, nn.Module):
        model = copy.deepcopy(config_or_model)
        in_chans = getattr(config, "in_chans", 3)
    else:
        model = build_model(config_or_model, num_classes=num_classes)
        in_chans = config.in_chans
    model = prepare(model, settings)
    x = make_input((batch_size, in_chans, size, size), settings)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") and dev.type == "cpu" else None
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    samples, _ = measure(lambda: model(x), settings, cache_dir=cache)
    median, iqr = summarize(samples)
    result = LatencyResult(median_ms=median, iqr_ms=iqr, repeats=len(samples), device_name=signature["device_name"],
                           signature=signature, settings=recorded, arch_id=arch_id, samples_ms=tuple(samples),
                           measured_at=started, load_avg=load)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(result.to_dict(), indent=1))
        os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
    return result
