"""``python -m nas.summary NAME|CONFIG.yaml``: what an architecture is and what it costs.

Example::

    python -m nas.summary cvt_13
    python -m nas.summary experiments/cvt/cvt-21-384x384.yaml --resolution 224
"""
from __future__ import annotations

import sys
from typing import Sequence

import cvt

from .cli import ArgumentParser, count, run_main
from .cost import count_macs, count_params


def describe(config, resolution: int, num_classes: int) -> str:
    """The family's description of the architecture (``config.describe``), then parameter and MAC totals."""
    rows = config.describe(resolution)
    params = count_params(config, num_classes=num_classes)
    macs = count_macs(config, resolution, num_classes=num_classes)
    rows.append(f"params {params / 1e6:.3f}M ({params:,}); MACs at {resolution}x{resolution}: {macs / 1e9:.4f}G "
                f"(conv + linear + attention matmuls, the CvT paper's FLOPs); arch id {config.arch_id()}")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m nas.summary", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a preset name (e.g. cvt_13, cct_7_3x1_32) or a config YAML file (CvT or CCT)")
    parser.add_argument("--resolution", type=count(1), default=None, help="input size (default: the config's)")
    parser.add_argument("--num-classes", type=count(0), default=1000,
                        help="classifier width, 0 for none (default 1000)")
    args = parser.parse_args(argv)
    config = cvt.load_config(args.model)
    print(describe(config, args.resolution or config.img_size, args.num_classes))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
