"""What proxy training and training-free scores share: device, threads, seeding, the proxy model."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import nn

import cvt
from cvt import UserError

from .._cpu import available_cpus
from ..data import Dataset
from ._config import ProxyConfig


@contextlib.contextmanager
def seeded_run(proxy: ProxyConfig, device: torch.device) -> Iterator[int]:
    """Fixed thread count and torch's global RNG seeded from ``proxy.seed``; both restored afterwards.

    Model initialisation and drop-path draw from torch's global generator, so the run forks it rather
    than re-seeding the caller's stream. Yields the thread count used.
    """
    threads = proxy.threads or available_cpus()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(proxy.seed)
            yield threads
    finally:
        torch.set_num_threads(previous)


def scale_width(config: Any, mult: float) -> Any:
    """``config`` with every width times ``mult`` (the family's ``scale_width``; widths stay multiples of
    their head counts)."""
    return config if mult == 1.0 else config.scale_width(mult)


def proxy_model_config(model_config: Any, proxy: ProxyConfig, *, in_chans: int) -> Any:
    """The config actually trained: width multiplier, the dataset's channels, the proxy resolution."""
    config = scale_width(model_config, proxy.width_mult)
    changes: dict[str, Any] = {"in_chans": in_chans}
    if hasattr(config, "img_size"):  # CCT sizes its position embedding from it
        changes["img_size"] = proxy.resolution
    return config.replace(**changes)


def build_proxy_model(model: Any, dataset: Dataset, proxy: ProxyConfig) -> nn.Module:
    """A fresh model for ``dataset`` from a config, or ``model`` itself when it is already a module."""
    if isinstance(model, nn.Module):
        if proxy.width_mult != 1.0:
            raise UserError("width_mult applies to model configs only; build the module at the width you want")
        return model
    config = proxy_model_config(model, proxy, in_chans=dataset.in_chans)
    return cvt.build_model(config, num_classes=dataset.num_classes)


def select_data(dataset: Dataset, proxy: ProxyConfig, *, subsets: bool = True) -> Dataset:
    """The classes, subsets and resolution the proxy asks for (subsets skipped when ``subsets`` is False)."""
    return dataset.select(classes=proxy.classes, train_subset=proxy.train_subset if subsets else None,
                          val_subset=proxy.val_subset if subsets else None, resolution=proxy.resolution,
                          seed=proxy.seed)


def normalize(images: torch.Tensor, dataset: Dataset) -> torch.Tensor:
    """uint8 images -> float, standardised with the dataset's channel statistics."""
    mean = torch.tensor(dataset.mean, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(dataset.std, device=images.device).view(1, -1, 1, 1)
    return (images.float().div_(255) - mean).div_(std)
