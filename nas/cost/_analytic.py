"""Closed-form MACs and parameters of a config: what the search uses (no model is built).

The MAC convention is the CvT paper's and :func:`nas.cost.count_macs`'s default ``"paper"`` one: one
multiply-accumulate = 1; convolutions, linear layers and the attention matmuls (QK^T and AV, at the
strided K/V length, cls token included; CCT's SeqPool matmul too); norms, activations, softmax, pooling
and biases excluded. ``convention="conv_linear"`` drops the matmuls (the CCT authors' README numbers).
Tests check every preset and random members of every space against the fvcore tracer within 0.1%;
parameters are exact.

CvT token counts per block (Q/K/V each): ``dw_bn`` a depth-wise conv, grid ``floor((H + 2p - k) / s) + 1``;
``avg`` an average pool with ``ceil_mode`` for K/V and no pooling for Q; ``linear`` the full grid. A cls
token adds one token to Q and to K/V. CCT: the tokenizer's convs (each followed by a 3/2/1 max-pool in
the conv tokenizer), then ``num_layers`` encoder layers over ``H*W`` (+1 class) tokens.
"""
from __future__ import annotations

from typing import Any

from cvt import CCT_POOL as POOL, BlockSpec, CCTConfig, ConfigError, CvTConfig

from ._count import CONVENTIONS

__all__ = ["analytic_macs", "analytic_params", "macs_breakdown"]

# Component names of :func:`macs_breakdown`, in forward order.
COMPONENTS = ("conv_embed", "dw_conv", "qkv", "attention", "attn_proj", "mlp", "head")
CCT_COMPONENTS = ("tokenizer", "qkv", "attention", "attn_proj", "mlp", "seqpool_score", "seqpool_matmul", "head")
_MATMULS = ("attention", "seqpool_matmul")  # left out by the "conv_linear" convention


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _pool_out(size: int, kernel: int, stride: int, padding: int) -> int:
    """AvgPool2d with ``ceil_mode=True`` (PyTorch drops a last window that starts in the padding)."""
    out = -(-(size + 2 * padding - kernel) // stride) + 1
    if (out - 1) * stride >= size + padding:
        out -= 1
    return out


def kv_grid(spec: BlockSpec, h: int, w: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Token grids of Q and of K/V in one block whose input grid is ``h`` x ``w`` (cls token excluded)."""
    if spec.proj_method == "dw_bn":
        q = (_conv_out(h, spec.kernel_qkv, spec.stride_q, spec.padding_q),
             _conv_out(w, spec.kernel_qkv, spec.stride_q, spec.padding_q))
        kv = (_conv_out(h, spec.kernel_qkv, spec.stride_kv, spec.padding_kv),
              _conv_out(w, spec.kernel_qkv, spec.stride_kv, spec.padding_kv))
    elif spec.proj_method == "avg":
        q = (h, w)
        kv = (_pool_out(h, spec.kernel_qkv, spec.stride_kv, spec.padding_kv),
              _pool_out(w, spec.kernel_qkv, spec.stride_kv, spec.padding_kv))
    else:  # "linear"
        q = kv = (h, w)
    return q, kv


def block_macs(spec: BlockSpec, h: int, w: int) -> dict[str, int]:
    """MACs of one CvT block by component (its input grid is ``h`` x ``w``)."""
    c = spec.dim
    cls = int(spec.with_cls_token)
    (qh, qw), (kh, kw) = kv_grid(spec, h, w)
    tokens = h * w + cls
    lq, lkv = qh * qw + cls, kh * kw + cls
    hidden = int(c * spec.mlp_ratio)
    dw = 0
    if spec.proj_method == "dw_bn":
        dw = c * spec.kernel_qkv ** 2 * (qh * qw + 2 * kh * kw)
    return {
        "dw_conv": dw,
        "qkv": c * c * (lq + 2 * lkv),
        "attention": 2 * lq * lkv * c,  # QK^T and AV; the head split does not change the sum
        "attn_proj": lq * c * c,
        "mlp": 2 * tokens * c * hidden,
    }


def block_params(spec: BlockSpec) -> int:
    c = spec.dim
    hidden = int(c * spec.mlp_ratio)
    conv = 3 * (c * spec.kernel_qkv ** 2 + 2 * c) if spec.proj_method == "dw_bn" else 0  # dw conv + BN
    return (2 * c  # norm1
            + conv
            + 3 * (c * c + c * spec.qkv_bias)  # proj_q/k/v
            + c * c + c  # attn.proj
            + 2 * c  # norm2
            + c * hidden + hidden + hidden * c + c)  # fc1, fc2


def _cvt_breakdown(config: CvTConfig, resolution: int | None, num_classes: int) -> dict[str, int]:
    out = dict.fromkeys(COMPONENTS, 0)
    in_chans = config.in_chans
    for i, (h, w) in enumerate(config.grid_sizes(resolution)):
        c = config.embed_dims[i]
        out["conv_embed"] += h * w * c * in_chans * config.patch_size[i] ** 2
        for spec in config.blocks(i):
            for key, value in block_macs(spec, h, w).items():
                out[key] += value
        in_chans = c
    out["head"] = config.embed_dims[-1] * max(num_classes, 0)
    return out


def _cvt_params(config: CvTConfig, num_classes: int) -> int:
    total = 0
    in_chans = config.in_chans
    for i in range(config.num_stages):
        c = config.embed_dims[i]
        total += in_chans * c * config.patch_size[i] ** 2 + c + 2 * c  # conv embed (bias) + LayerNorm
        total += c * config.cls_token[i]
        total += sum(block_params(spec) for spec in config.blocks(i))
        in_chans = c
    c = config.embed_dims[-1]
    return total + 2 * c + (c * num_classes + num_classes if num_classes > 0 else 0)


def tokenizer_layers(config: CCTConfig, resolution: int | None = None) -> list[tuple[int, int, int]]:
    """Per tokenizer conv: (input channels, output channels, output grid side before any max-pool)."""
    widths = [config.in_chans] + [config.conv_channels] * (config.conv_layers - 1) + [config.embed_dim]
    h = resolution or config.img_size
    out = []
    for c_in, c_out in zip(widths[:-1], widths[1:]):
        h = _conv_out(h, config.kernel_size, config.stride, config.padding)
        out.append((c_in, c_out, h))
        if config.tokenizer == "conv":
            h = _conv_out(h, *POOL)
    return out


def _cct_breakdown(config: CCTConfig, resolution: int | None, num_classes: int) -> dict[str, int]:
    out = dict.fromkeys(CCT_COMPONENTS, 0)
    out["tokenizer"] = sum(h * h * c_out * c_in * config.kernel_size ** 2
                           for c_in, c_out, h in tokenizer_layers(config, resolution))
    n, c = config.sequence_length(resolution), config.embed_dim
    for spec in config.layers():
        out["qkv"] += 3 * n * c * c
        out["attention"] += 2 * n * n * c
        out["attn_proj"] += n * c * c
        out["mlp"] += 2 * n * c * spec.hidden
    if config.pooling == "seqpool":
        out["seqpool_score"] = n * c  # Linear(C, 1) on every token
        out["seqpool_matmul"] = n * c  # weights^T x
    out["head"] = c * max(num_classes, 0)
    return out


def _cct_params(config: CCTConfig, num_classes: int) -> int:
    total = sum(c_out * c_in * config.kernel_size ** 2 + (c_out if config.tokenizer == "patch" else 0)
                for c_in, c_out, _ in tokenizer_layers(config))
    c = config.embed_dim
    total += c if config.pooling == "cls" else c + 1  # class token, or SeqPool's Linear(C, 1)
    if config.pos_embed == "learnable":  # sine is a buffer
        total += config.sequence_length() * c
    for spec in config.layers():
        total += (2 * c  # pre_norm
                  + 3 * c * c  # qkv, no bias
                  + c * c + c  # proj
                  + 2 * c  # norm1
                  + c * spec.hidden + spec.hidden + spec.hidden * c + c)  # linear1, linear2
    return total + 2 * c + (c * num_classes + num_classes if num_classes > 0 else 0)


def macs_breakdown(config: Any, resolution: int | None = None, num_classes: int = 1000) -> dict[str, int]:
    """MACs by component for a square ``resolution`` (default: the config's ``img_size``).

    CvT: ``conv_embed``, ``dw_conv``, ``qkv``, ``attention``, ``attn_proj``, ``mlp``, ``head``.
    CCT: ``tokenizer``, ``qkv``, ``attention``, ``attn_proj``, ``mlp``, ``seqpool_score``,
    ``seqpool_matmul``, ``head``.
    """
    if isinstance(config, CvTConfig):
        return _cvt_breakdown(config, resolution, num_classes)
    if isinstance(config, CCTConfig):
        return _cct_breakdown(config, resolution, num_classes)
    raise ConfigError(f"no analytic cost model for {type(config).__name__}; known: CvTConfig, CCTConfig")


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
    if isinstance(config, CvTConfig):
        return _cvt_params(config, num_classes)
    if isinstance(config, CCTConfig):
        return _cct_params(config, num_classes)
    raise ConfigError(f"no analytic cost model for {type(config).__name__}; known: CvTConfig, CCTConfig")
