"""``python -m nas.export RUN_DIR``: searched architectures as reference-format configs with provenance.

Each export is the reference's experiment YAML (``MODEL.SPEC``, per-block values as nested lists),
named ``<space>-<budget>-t<trial>.yaml`` (e.g. ``cvt-13-nas-4gflops-t042.yaml``), with a comment header
recording where it came from: MACs, params, latency and its device, proxy accuracy and settings,
dataset, space, sampler, seed, trial number and the cvt-nas version. Load it with::

    import cvt, timm
    config = cvt.CvTConfig.from_yaml("cvt-13-nas-4gflops-t042.yaml")
    model = timm.create_model("cvt_13", config="cvt-13-nas-4gflops-t042.yaml", num_classes=10)

(CCT exports: ``cvt.CCTConfig.from_yaml`` / ``timm.create_model("cct_7_3x1_32", config=...)``.)
``--format json`` writes the same mapping as JSON plus a ``NAS`` section holding the provenance; read it
with ``CvTConfig.from_dict(json.load(f))``.

Examples::

    python -m nas.export runs/cvt-13-nas-4gflops                 # the Pareto front
    python -m nas.export runs/cvt-13-nas-4gflops --top 3 --format json --out configs/
    python -m nas.export runs/cvt-13-nas-4gflops --trial 42
    python -m nas.export runs/cvt-4gflops --with-weights   # a supernet search: inherited weights beside each

``--with-weights`` (runs searched with ``--estimator supernet``) writes ``<name>.safetensors`` beside each config:
the member extracted from the run's supernet (a plain ``cvt.CvT`` state_dict for the data's classes), loadable
with ``cvt.load_checkpoint(model, PATH)`` or ``timm.create_model(..., pretrained=True,
pretrained_cfg_overlay=dict(file=PATH, num_classes=N))``; its metadata and the config's header name the supernet.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from .cli import ArgumentParser, run_main
from .search import FORMATS, export_run, export_trials, load_run, select_trials

__all__ = ["main", "export_run", "export_trials", "select_trials", "load_run"]


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (console script ``cvt-nas-export``): bad input is one line and exit code 2."""
    return run_main(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    parser = ArgumentParser(prog="python -m nas.export",
                            description="Write searched architectures as reference-format configs (MODEL.SPEC, "
                                        "per-block values as nested lists) named <space>-<budget>-t<trial>.yaml, "
                                        "with a provenance header: MACs, params, latency and its device, proxy "
                                        "accuracy and settings, dataset, space, sampler, seed, trial, version.",
                            epilog="Exports load with cvt.CvTConfig.from_yaml(PATH) and "
                                   "timm.create_model('cvt_13', config=PATH) (import cvt first).")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by python -m nas.search")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--top", type=int, metavar="K", help="the K most accurate trained trials within budget")
    which.add_argument("--pareto", action="store_true", help="every trial on the Pareto front (the default)")
    which.add_argument("--trial", type=int, metavar="N", help="trial number N")
    parser.add_argument("--format", choices=FORMATS, default="yaml", help="yaml (reference format, default) or json")
    parser.add_argument("--out", metavar="DIR", help="where to write (default RUN_DIR/exports)")
    parser.add_argument("--with-weights", action="store_true",
                        help="a supernet search only: beside each config, its weights inherited from the supernet "
                             "(.safetensors, a plain CvT state_dict) to start fine-tuning from")
    args = parser.parse_args(argv)
    manifest, config, study = load_run(args.run_dir)
    trials = select_trials(study, config.space.objective_names, top=args.top, trial=args.trial)
    for path in export_trials(trials, manifest, config, args.out or Path(args.run_dir) / "exports", args.format,
                              with_weights=args.with_weights):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
