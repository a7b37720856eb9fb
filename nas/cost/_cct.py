"""CCT's cost model (registered for ``nas.cost``): closed-form MACs and parameters, latency operators.

The tokenizer's convs (each followed by a 3/2/1 max-pool in the conv tokenizer), then ``num_layers``
encoder layers over ``H*W`` (+1 class) tokens, then the pooling head (SeqPool's scoring layer and matmul
included). Latency operators: the tokenizer, each encoder layer (width, heads, MLP width, tokens) and the
pooling head.
"""
from __future__ import annotations

from typing import Any, Callable

from cvt import CCT_POOL, CCTConfig

from ._family import FamilyCosts, Operator, PoolingHead, block_features, conv_out, register_costs
from ._latency import LatencySettings, make_input, prepare

__all__ = ["tokenizer_layers", "COMPONENTS"]

COMPONENTS = ("tokenizer", "qkv", "attention", "attn_proj", "mlp", "seqpool_score", "seqpool_matmul", "head")


def tokenizer_layers(config: CCTConfig, resolution: int | None = None) -> list[tuple[int, int, int]]:
    """Per tokenizer conv: (input channels, output channels, output grid side before any max-pool)."""
    widths = [config.in_chans] + [config.conv_channels] * (config.conv_layers - 1) + [config.embed_dim]
    h = resolution or config.img_size
    out = []
    for c_in, c_out in zip(widths[:-1], widths[1:]):
        h = conv_out(h, config.kernel_size, config.stride, config.padding)
        out.append((c_in, c_out, h))
        if config.tokenizer == "conv":
            h = conv_out(h, *CCT_POOL)
    return out


def _breakdown(config: CCTConfig, resolution: int | None, num_classes: int) -> dict[str, int]:
    out = dict.fromkeys(COMPONENTS, 0)
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


def _params(config: CCTConfig, num_classes: int) -> int:
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


def _operators(config: CCTConfig, resolution: int, num_classes: int) -> list[Operator]:
    parts = _breakdown(config, resolution, num_classes)
    n, c = config.sequence_length(resolution), config.embed_dim
    # Only the tokenizer's fields: the rest of the config does not change it.
    tok = CCTConfig(tokenizer=config.tokenizer, kernel_size=config.kernel_size, conv_layers=config.conv_layers,
                    conv_channels=config.conv_channels, tokenizer_stride=config.tokenizer_stride,
                    tokenizer_padding=config.tokenizer_padding, embed_dim=c, num_layers=1, num_heads=1,
                    pos_embed="none", in_chans=config.in_chans, img_size=resolution)
    ops = [Operator(f"tokenizer {tok.tokenizer} {tok.in_chans}>{tok.conv_channels}>{c} k{tok.kernel_size} "
                    f"s{tok.stride} p{tok.padding} x{tok.conv_layers} @{resolution}", "embed", ("cct", tok),
                    (float(parts["tokenizer"]), float(n * c), 1.0))]
    for spec in config.layers():
        spec = spec._replace(index=0, drop=0.0, attn_drop=0.0, drop_path=0.0)
        macs = {"qkv": 3 * n * c * c, "attn_proj": n * c * c, "mlp": 2 * n * c * spec.hidden,
                "attention": 2 * n * n * c}
        ops.append(Operator(f"layer d{c} h{spec.num_heads} r{spec.hidden} n{n}", "block", ("cct", spec, n),
                            block_features(macs, n, c)))
    ops.append(Operator(f"head d{c} n{num_classes} t{n} {config.pooling} pe-{config.pos_embed}", "head",
                        ("cct", c, num_classes, n, config.pooling, config.pos_embed),
                        (float(c * max(num_classes, 0)), float(n * c), 1.0)))
    return ops


def _build_operator(op: Operator, settings: LatencySettings) -> Callable[[], Any]:
    from cvt.cct import EncoderLayer, Tokenizer

    b = settings.batch_size
    _, *recipe = op.recipe
    if op.kind == "embed":
        (tok,) = recipe
        module, x = Tokenizer(tok), make_input((b, tok.in_chans, tok.img_size, tok.img_size), settings)
    elif op.kind == "block":
        spec, n = recipe
        module, x = EncoderLayer(spec), make_input((b, n, spec.dim), settings)
    else:
        c, num_classes, n, pooling, pos_embed = recipe
        module, x = PoolingHead(c, num_classes, n, pooling, pos_embed), make_input((b, n, c), settings)
    module = prepare(module, settings)
    return lambda: module(x)


register_costs("cct", FamilyCosts(components=COMPONENTS, breakdown=_breakdown, params=_params, operators=_operators,
                                  build_operator=_build_operator))
