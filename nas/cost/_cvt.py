"""CvT's cost model (registered for ``nas.cost``): closed-form MACs and parameters, latency operators.

Token counts per block (Q/K/V each): ``dw_bn`` a depth-wise conv, grid ``floor((H + 2p - k) / s) + 1``;
``avg`` an average pool with ``ceil_mode`` for K/V and no pooling for Q; ``linear`` the full grid. A cls
token adds one token to Q and to K/V. Latency operators: each stage's conv token embedding (input
channels, width, kernel, stride, input grid), each transformer block (width, heads, MLP width, strides,
kernel, projection method, cls token, token grid) and the head.
"""
from __future__ import annotations

from typing import Any, Callable

from cvt import BlockSpec, CvTConfig

from ._family import FamilyCosts, Operator, PoolingHead, block_features, conv_out, pool_out, register_costs
from ._latency import LatencySettings, make_input, prepare

__all__ = ["kv_grid", "block_macs", "block_params", "COMPONENTS"]

# Component names of the MACs breakdown, in forward order.
COMPONENTS = ("conv_embed", "dw_conv", "qkv", "attention", "attn_proj", "mlp", "head")


def kv_grid(spec: BlockSpec, h: int, w: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Token grids of Q and of K/V in one block whose input grid is ``h`` x ``w`` (cls token excluded)."""
    if spec.proj_method == "dw_bn":
        q = (conv_out(h, spec.kernel_qkv, spec.stride_q, spec.padding_q),
             conv_out(w, spec.kernel_qkv, spec.stride_q, spec.padding_q))
        kv = (conv_out(h, spec.kernel_qkv, spec.stride_kv, spec.padding_kv),
              conv_out(w, spec.kernel_qkv, spec.stride_kv, spec.padding_kv))
    elif spec.proj_method == "avg":
        q = (h, w)
        kv = (pool_out(h, spec.kernel_qkv, spec.stride_kv, spec.padding_kv),
              pool_out(w, spec.kernel_qkv, spec.stride_kv, spec.padding_kv))
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


def _breakdown(config: CvTConfig, resolution: int | None, num_classes: int) -> dict[str, int]:
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


def _params(config: CvTConfig, num_classes: int) -> int:
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


def _operators(config: CvTConfig, resolution: int, num_classes: int) -> list[Operator]:
    ops = []
    in_chans, h_in = config.in_chans, resolution
    for i, (h, w) in enumerate(config.grid_sizes(resolution)):
        c, k, s, p = config.embed_dims[i], config.patch_size[i], config.patch_stride[i], config.patch_padding[i]
        ops.append(Operator(f"embed {in_chans}>{c} k{k} s{s} p{p} @{h_in}", "embed",
                            ("cvt", in_chans, c, k, s, p, h_in),
                            (float(h * w * c * in_chans * k * k), float(h * w * c), 1.0)))
        for spec in config.blocks(i):
            # Drop rates do not change inference; position in the model does not change the block.
            spec = spec._replace(stage=0, index=0, attn_drop=0.0, drop=0.0, drop_path=0.0)
            key = (f"block d{spec.dim} h{spec.num_heads} r{int(spec.dim * spec.mlp_ratio)} kv{spec.stride_kv} "
                   f"q{spec.stride_q} k{spec.kernel_qkv} p{spec.padding_kv}/{spec.padding_q} {spec.proj_method} "
                   f"cls{int(spec.with_cls_token)} b{int(spec.qkv_bias)} {config.act_layer} @{h}x{w}")
            ops.append(Operator(key, "block", ("cvt", spec, config.act_layer, h, w),
                                block_features(block_macs(spec, h, w), h * w + spec.with_cls_token, spec.dim)))
        in_chans, h_in = c, h
    h, w = config.grid_sizes(resolution)[-1]
    c, cls = config.embed_dims[-1], bool(config.cls_token[-1])
    tokens = 1 if cls else h * w
    ops.append(Operator(f"head d{c} n{num_classes} t{tokens}", "head", ("cvt", c, num_classes, tokens),
                        (float(c * max(num_classes, 0)), float(tokens * c), 1.0)))
    return ops


def _build_operator(op: Operator, settings: LatencySettings) -> Callable[[], Any]:
    from cvt.cvt import ConvEmbed, CvTBlock, act_layer

    b = settings.batch_size
    _, *recipe = op.recipe
    if op.kind == "embed":
        in_chans, c, k, s, p, h_in = recipe
        module, x = ConvEmbed(in_chans, c, k, s, p), make_input((b, in_chans, h_in, h_in), settings)
    elif op.kind == "block":
        spec, act, h, w = recipe
        block = prepare(CvTBlock(spec, act_layer(act)), settings)
        tokens = make_input((b, h * w + spec.with_cls_token, spec.dim), settings)
        return lambda: block(tokens, h, w)
    else:
        c, num_classes, tokens = recipe
        module = PoolingHead(c, num_classes, tokens, "cls" if tokens == 1 else "mean")
        x = make_input((b, tokens, c), settings)
    module = prepare(module, settings)
    return lambda: module(x)


register_costs("cvt", FamilyCosts(components=COMPONENTS, breakdown=_breakdown, params=_params, operators=_operators,
                                  build_operator=_build_operator))
