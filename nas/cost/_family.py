"""The cost model's seam per model family: each family registers how its MACs, parameters and latency
operators are computed (``_cvt.py``, ``_cct.py``); ``analytic_macs``, ``analytic_params`` and the latency
predictor look a config's family up here. Also what the families share: convolution output sizes, the
latency table's :class:`Operator` and the pooling head module.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

import cvt
from cvt import ConfigError

__all__ = ["FamilyCosts", "register_costs", "costs_of", "costs_named", "Operator", "block_features", "conv_out",
           "pool_out", "PoolingHead"]


@dataclass(frozen=True)
class FamilyCosts:
    """How the cost model prices one family.

    Attributes:
        components: names of :attr:`breakdown`'s parts, in forward order.
        breakdown: ``(config, resolution, num_classes) -> {component: MACs}``.
        params: ``(config, num_classes) -> parameter count``.
        operators: ``(config, resolution, num_classes) -> [Operator]`` for the latency table.
        build_operator: ``(operator, settings) -> zero-argument callable`` running it once (for measuring).
    """

    components: tuple[str, ...]
    breakdown: Callable[[Any, int | None, int], dict[str, int]]
    params: Callable[[Any, int], int]
    operators: Callable[[Any, int, int], list["Operator"]]
    build_operator: Callable[["Operator", Any], Callable[[], Any]]


_COSTS: dict[str, FamilyCosts] = {}


def register_costs(family: str, costs: FamilyCosts) -> None:
    """Price configs of the model family named ``family`` (``cvt.FAMILIES``) with ``costs``."""
    _COSTS[family] = costs


def costs_named(family: str) -> FamilyCosts:
    try:
        return _COSTS[family]
    except KeyError:
        raise ConfigError(f"no cost model for model family {family!r}; known: {', '.join(_COSTS)}") from None


def costs_of(config: Any) -> FamilyCosts:
    """The cost model of ``config``'s family."""
    try:
        family = cvt.family_of(config).name
    except ConfigError:
        family = None
    if family not in _COSTS:
        known = ", ".join(cvt.family_named(f).config_cls.__name__ for f in _COSTS)
        raise ConfigError(f"no analytic cost model for {type(config).__name__}; known: {known}")
    return _COSTS[family]


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def pool_out(size: int, kernel: int, stride: int, padding: int) -> int:
    """AvgPool2d with ``ceil_mode=True`` (PyTorch drops a last window that starts in the padding)."""
    out = -(-(size + 2 * padding - kernel) // stride) + 1
    if (out - 1) * stride >= size + padding:
        out -= 1
    return out


@dataclass(frozen=True)
class Operator:
    """One table entry: a stable ``key``, its ``kind`` (embed, block, head), what is needed to build it
    (``recipe``) and features of the fallback model (batch-1 MACs and tensor sizes, plus 1)."""

    key: str
    kind: str
    recipe: tuple
    features: tuple[float, ...]


def block_features(macs: dict[str, int], tokens: int, dim: int) -> tuple[float, ...]:
    return (float(macs["qkv"] + macs["attn_proj"] + macs["mlp"]), float(macs["attention"]),
            float(macs.get("dw_conv", 0)), float(tokens * dim), 1.0)


class PoolingHead(nn.Module):
    """Final LayerNorm, pooling (cls token, token mean or SeqPool) and the classifier; CCT adds its
    position embedding first."""

    def __init__(self, dim: int, num_classes: int, tokens: int, pooling: str, pos_embed: str = "none"):
        super().__init__()
        from cvt.cct import SeqPool

        self.pos = nn.Parameter(torch.zeros(1, tokens, dim)) if pos_embed != "none" else None
        self.norm = nn.LayerNorm(dim)
        self.pool = SeqPool(dim) if pooling == "seqpool" else None
        self.pooling = pooling
        self.head = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pos is not None:
            x = x + self.pos
        x = self.norm(x)
        if self.pool is not None:
            x = self.pool(x)
        else:
            x = x[:, 0] if self.pooling == "cls" else x.mean(dim=1)
        return self.head(x)
