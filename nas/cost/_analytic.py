"""Closed-form MACs and parameters of a config: what the search uses (no model is built).

The MAC convention is the CvT paper's and :func:`nas.cost.count_macs`'s default ``"paper"`` one: one
multiply-accumulate = 1; convolutions, linear layers and the attention matmuls (QK^T and AV, at the
strided K/V length, cls token included; CCT's SeqPool matmul too); norms, activations, softmax, pooling
and biases excluded. ``convention="conv_linear"`` drops the matmuls (the CCT authors' README numbers).
Tests check every preset and random members of every space against the fvcore tracer within 0.1%;
parameters are exact. Each family's formulas live in its own file (``_cvt.py``, ``_cct.py``).
"""
from __future__ import annotations

from typing import Any

from cvt import ConfigError

from ._count import CONVENTIONS
from ._family import costs_of

__all__ = ["analytic_macs", "analytic_params", "macs_breakdown"]

_MATMULS = ("attention", "seqpool_matmul")  # left out by the "conv_linear" convention


def macs_breakdown(config: Any, resolution: int | None = None, num_classes: int = 1000) -> dict[str, int]:
    """MACs by component for a square ``resolution`` (default: the config's ``img_size``).

    The components are the family's (``FamilyCosts.components``): for CvT ``conv_embed``, ``dw_conv``,
    ``qkv``, ``attention``, ``attn_proj``, ``mlp``, ``head``; for CCT ``tokenizer``, ``qkv``, ``attention``,
    ``attn_proj``, ``mlp``, ``seqpool_score``, ``seqpool_matmul``, ``head``.
    """
    return costs_of(config).breakdown(config, resolution, num_classes)


def analytic_macs(config: Any, resolution: int | None = None, num_classes: int = 1000, *,
                  convention: str = "paper") -> int:
    """Multiply-accumulates of one forward pass of one image, in closed form.

    Equal to ``count_macs(config, resolution, convention=...)`` (fvcore) within 0.1%, about four orders
    of magnitude faster.

    Args:
        config: a ``CvTConfig`` or ``CCTConfig``.
        resolution: square input size; defaults to ``config.img_size``.
        num_classes: classifier width (0: no head).
        convention: ``"paper"`` (attention matmuls included) or ``"conv_linear"``.

    Example:
        >>> from cvt import preset
        >>> round(analytic_macs(preset("cvt_13")) / 1e9, 3)
        4.566
    """
    if convention not in CONVENTIONS:
        raise ConfigError(f"unknown MAC convention {convention!r}; use one of {', '.join(CONVENTIONS)}")
    parts = macs_breakdown(config, resolution, num_classes)
    skip = _MATMULS if convention == "conv_linear" else ()
    return sum(v for k, v in parts.items() if k not in skip)


def analytic_params(config: Any, num_classes: int = 1000) -> int:
    """Exact number of parameters (BatchNorm statistics and CCT's sine table are buffers, not parameters).

    Example:
        >>> from cvt import preset
        >>> analytic_params(preset("cvt_13"))
        19997480
    """
    return costs_of(config).params(config, num_classes)
