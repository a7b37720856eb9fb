"""Layers both model families use: stochastic depth on a residual, and the activations."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["DropPath", "QuickGELU", "act_layer"]


class DropPath(nn.Module):
    """A residual connection with stochastic depth: ``residual + branch``, the branch dropped per sample with
    probability ``p`` while training (and the kept ones scaled by 1 / (1 - p)).

    One fused op (``addcmul``) instead of a masked copy of the branch added after (docs/performance.md).
    """

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, residual: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return residual + branch
        keep = 1.0 - self.p
        mask = branch.new_empty((branch.shape[0],) + (1,) * (branch.ndim - 1)).bernoulli_(keep)
        return torch.addcmul(residual, branch, mask.div_(keep))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the activation of the reference code (and CLIP)."""

    alpha = 1.702

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.alpha * x)


def act_layer(name: str) -> type[nn.Module]:
    """The activation class of a config's ``act_layer`` (``"quick_gelu"`` or ``"gelu"``)."""
    return QuickGELU if name == "quick_gelu" else nn.GELU
