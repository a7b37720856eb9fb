"""``python -m nas.summary NAME|CONFIG.yaml``: what an architecture is and what it costs.

Example::

    python -m nas.summary cvt_13
    python -m nas.summary experiments/cvt/cvt-21-384x384.yaml --resolution 224
"""
from __future__ import annotations

import sys
from typing import Sequence

import cvt
from cvt import CCTConfig, CvTConfig, UserError

from .cli import ArgumentParser, run_main
from .cost import count_macs, count_params


def describe(config, resolution: int, num_classes: int) -> str:
    """Stage table (CvT) or token/layer line (CCT), then parameter and MAC totals."""
    rows = _cvt_stages(config, resolution) if isinstance(config, CvTConfig) else _cct_layers(config, resolution)
    params = count_params(config, num_classes=num_classes)
    macs = count_macs(config, resolution, num_classes=num_classes)
    rows.append(f"params {params / 1e6:.3f}M ({params:,}); MACs at {resolution}x{resolution}: {macs / 1e9:.4f}G "
                f"(conv + linear + attention matmuls, the CvT paper's FLOPs); arch id {config.arch_id()}")
    return "\n".join(rows)


def _cct_layers(config: CCTConfig, resolution: int) -> list[str]:
    h, w = config.grid_size(resolution)
    return [f"{config.tokenizer} tokenizer ({config.conv_layers} x {config.kernel_size}x{config.kernel_size}) -> "
            f"{h}x{w} grid, {config.sequence_length(resolution)} tokens; {config.num_layers} layers of width "
            f"{config.embed_dim}; {config.pooling} pooling, {config.pos_embed} position embedding"]


def _cvt_stages(config: CvTConfig, resolution: int) -> list[str]:
    """A per-stage table (tokens, width, heads, depth) with parameter and MAC totals."""
    rows = [f"{'stage':>5} {'grid':>9} {'Q tokens':>9} {'KV tokens':>10} {'dim':>5} {'heads':>7} {'depth':>5}"
            f" {'mlp ratio':>11} {'kv stride':>10}"]
    for i, (h, w) in enumerate(config.grid_sizes(resolution)):
        blocks = config.blocks(i)
        cls = int(config.cls_token[i])
        kv = sorted({((h + 2 * b.padding_kv - b.kernel_qkv) // b.stride_kv + 1)
                     * ((w + 2 * b.padding_kv - b.kernel_qkv) // b.stride_kv + 1) + cls for b in blocks})
        heads = sorted({b.num_heads for b in blocks})
        ratios = sorted({b.mlp_ratio for b in blocks})
        strides = sorted({b.stride_kv for b in blocks})
        join = lambda xs: "/".join(f"{x:g}" for x in xs)  # noqa: E731
        rows.append(f"{i:>5} {f'{h}x{w}':>9} {h * w + cls:>9} {join(kv):>10} {config.embed_dims[i]:>5} "
                    f"{join(heads):>7} {config.depths[i]:>5} {join(ratios):>11} {join(strides):>10}")
    if config.is_per_block:  # a searched architecture: its block-by-block choices, stage by stage
        for i in range(config.num_stages):
            blocks = config.blocks(i)
            rows.append(f"stage {i} blocks: kv stride {' '.join(str(b.stride_kv) for b in blocks)} | mlp ratio "
                        f"{' '.join(f'{b.mlp_ratio:g}' for b in blocks)} | heads "
                        f"{' '.join(str(b.num_heads) for b in blocks)}")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m nas.summary", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a preset name (e.g. cvt_13, cct_7_3x1_32) or a config YAML file (CvT or CCT)")
    parser.add_argument("--resolution", type=int, default=None, help="input size (default: the config's)")
    parser.add_argument("--num-classes", type=int, default=1000, help="classifier width (default 1000)")
    args = parser.parse_args(argv)
    config = cvt.load_config(args.model)
    resolution = args.resolution or config.img_size
    if resolution < 1:
        raise UserError(f"--resolution {resolution}: give a positive input size, e.g. 224")
    print(describe(config, resolution, args.num_classes))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
