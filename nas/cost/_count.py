"""MACs and parameters of a model by tracing it with fvcore (the reference measurement).

Conventions (one multiply-accumulate = 1, as in the CvT paper, whose "FLOPs" are MACs):

* ``"paper"`` (default): convolutions, linear layers and **both attention matmuls** (QK^T and AV,
  including ``scaled_dot_product_attention``); norms, activations, softmax and biases excluded.
  CvT-13 @224 = 4.566 G.
* ``"conv_linear"``: convolutions and linear layers only, the convention of the CCT authors' README
  (CCT-7/3x1 @32 = 0.947 G instead of 1.1865 G).

The search itself uses the analytic counter in :mod:`nas.cost`; this tracer is what it is tested against.
"""
from __future__ import annotations

import logging
import warnings
from typing import Any

import torch
from torch import nn

__all__ = ["count_macs", "count_params", "CONVENTIONS"]

CONVENTIONS = ("paper", "conv_linear")

# Ops counted by each convention; everything else (norms, pooling, elementwise) counts zero.
_CONV_LINEAR = ("aten::_convolution", "aten::linear", "aten::addmm")
_MATMULS = ("aten::matmul", "aten::bmm", "aten::einsum", "aten::mm")


def _sdpa_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """QK^T plus AV: prod(q.shape[:-1]) * L_kv * (d_qk + d_v)."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(x) for x in inputs[:3])
    rows = 1
    for d in q[:-1]:
        rows *= d
    return rows * k[-2] * (q[-1] + v[-1])


def _as_model(model_or_config: Any, num_classes: int) -> nn.Module:
    if isinstance(model_or_config, nn.Module):
        return model_or_config
    from cvt import build_model

    return build_model(model_or_config, num_classes=num_classes)


def _resolution(model: nn.Module, resolution: int | None) -> int:
    if resolution is not None:
        return resolution
    config = getattr(model, "config", None)
    return getattr(config, "img_size", 224)


def count_macs(model_or_config: Any, resolution: int | None = None, *, convention: str = "paper",
               num_classes: int = 1000, in_chans: int | None = None) -> int:
    """Multiply-accumulates of one forward pass of one image.

    Args:
        model_or_config: an ``nn.Module`` or a model config (``CvTConfig``, ``CCTConfig``).
        resolution: square input size; defaults to the config's ``img_size``.
        convention: ``"paper"`` (attention matmuls included) or ``"conv_linear"``.
        num_classes: classifier width when a config is given.
        in_chans: input channels (defaults to the config's).

    Returns:
        The MAC count as an integer.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown MAC convention {convention!r}; use one of {', '.join(CONVENTIONS)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis
        from fvcore.nn.flop_count import _DEFAULT_SUPPORTED_OPS

    model = _as_model(model_or_config, num_classes)
    size = _resolution(model, resolution)
    chans = in_chans or getattr(getattr(model, "config", None), "in_chans", 3)
    was_training = model.training
    model.eval()
    x = torch.zeros(1, chans, size, size, device=next(model.parameters()).device)
    analysis = FlopCountAnalysis(model, x)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    counted = _CONV_LINEAR + (_MATMULS if convention == "paper" else ())
    handles: dict[str, Any] = {name: _DEFAULT_SUPPORTED_OPS[name] for name in counted}
    if convention == "paper":
        handles["aten::scaled_dot_product_attention"] = _sdpa_macs
    # fvcore's default table also counts norms; start from an empty one.
    analysis.clear_op_handles().set_op_handle(**handles)
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        total = int(analysis.total())
    model.train(was_training)
    return total


def count_params(model_or_config: Any, *, num_classes: int = 1000) -> int:
    """Number of parameters (a config is built on the meta device, allocating nothing)."""
    if isinstance(model_or_config, nn.Module):
        model = model_or_config
    else:
        with torch.device("meta"):
            model = _as_model(model_or_config, num_classes)
    return sum(p.numel() for p in model.parameters())
