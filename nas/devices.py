"""Device names, checked once for every room: ``cpu``, ``cuda``, ``cuda:N`` and ``auto``; and the CPUs this
process may use (:func:`available_cpus`: affinity and cgroup quota, not the machine's core count).

``auto`` means a CUDA GPU when this torch build sees one, else the CPU. Every command takes its devices
through these functions, so a name means the same everywhere and a missing device is one clear error.
"""
from __future__ import annotations

import re

import torch

from cvt import UserError

from ._cpu import available_cpus, cpu_model
from ._openmp import OPENMP_SETTINGS

__all__ = ["parse_device", "normalize_device", "device_available", "check_device", "resolve_device",
           "worker_device", "available_cpus", "cpu_model", "OPENMP_SETTINGS"]

_DEVICE = re.compile(r"^(cpu|cuda)(?::(\d+))?$")


def parse_device(device: str) -> torch.device:
    """``cpu``, ``cuda`` (``cuda:0``) or ``cuda:N`` as a ``torch.device``, present or not."""
    match = _DEVICE.match(str(device).strip().lower())
    if match is None:
        raise UserError(f"device {device!r} is not understood; use cpu, cuda or cuda:N")
    if match.group(1) == "cuda":
        return torch.device("cuda", int(match.group(2) or 0))
    return torch.device("cpu")


def normalize_device(device: str) -> str:
    """The canonical name of a device (``"cpu"``, ``"cuda:N"``; bare ``"cuda"`` is ``"cuda:0"``), present or not."""
    return str(parse_device(device))


def device_available(device: str) -> bool:
    """Whether ``device`` exists on this machine (UserError when it is not a device name at all)."""
    dev = parse_device(device)
    return dev.type == "cpu" or (torch.cuda.is_available() and dev.index < torch.cuda.device_count())


def check_device(device: str, what: str = "device", option: str = "--device") -> torch.device:
    """The ``torch.device`` for ``device``, or a ``UserError`` saying it is not on this machine (and that
    ``option`` can name another)."""
    dev = parse_device(device)
    if not device_available(device):
        have = (f"{torch.cuda.device_count()} CUDA device(s)" if torch.cuda.is_available()
                else "no CUDA GPU usable by this torch build")
        raise UserError(f"{what} {device!r} is not available: this machine has {have}; use {option} cpu "
                        f"or a device that exists")
    return dev


def resolve_device(name: str, what: str = "device", option: str = "--device") -> torch.device:
    """``auto`` -> a CUDA GPU when there is one, else the CPU; any other name checked against this machine."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return check_device(name, what, option)


def worker_device(spec: str, worker: int) -> str:
    """Worker ``worker``'s device for ``spec``: ``auto``/``cuda`` spread workers over the GPUs (else the CPU)."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda":
        return f"cuda:{worker % max(1, torch.cuda.device_count())}"
    return spec
