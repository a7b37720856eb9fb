"""Command line of ``python -m nas.search``: options, recipe YAML merging, -> :class:`SearchConfig`.

A recipe (``--config FILE``) is a YAML mapping whose keys are the option names (``latency-budget`` or
``latency_budget``); options given on the command line override it.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, Sequence

from cvt import UserError
from nas.proxy import GPU_DEFAULTS

from ..cli import ArgumentParser
from ..metrics import METRICS
from ..cost import DTYPES
from ._config import BUDGETED, LATENCY_MODES, PROXY_OPTIONS, SAMPLERS, SCHEDULERS, SearchConfig
from ._backend import BACKENDS

__all__ = ["build_parser", "parse_config"]

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SearchConfig)}

_DESCRIPTION = """\
Find the most accurate CvT/CCT architectures within hard budgets (MACs, latency, parameters) and export
the Pareto front as reference-format configs.

Every candidate's cost is computed BEFORE it is trained: MACs and parameters analytically, latency
measured on --device (or predicted). A candidate over any budget is never trained; it is recorded as
infeasible so the sampler learns where the budget boundary is. Costs are taken at the deployment
setting (--resolution, --num-classes); proxy training runs at --proxy-resolution on --data, so the
two resolutions differ on purpose. "FLOPs" means multiply-accumulates, as in the CvT paper."""

_EPILOG = """\
examples:
  python -m nas.search --budget 4GFLOPs
  python -m nas.search --space cvt13-nas --budget 4GFLOPs --trials 40 --workers 2 --data cifar10
  python -m nas.search --latency-budget 2.5ms --device cpu --objectives accuracy,latency,params
  python -m nas.search --config experiments/search/cvt13-nas-4gflops.yaml --trials 20
  python -m nas.search --budget 4GFLOPs --resume          # continue after a crash or Ctrl-C

watch live: optuna-dashboard RUN_DIR/study.journal --host 127.0.0.1   (the command is printed at start)
export:     python -m nas.export RUN_DIR --pareto"""


def _default(name: str) -> str:
    value = _DEFAULTS[name]
    return "none" if value in (None, ()) else str(value)


def _proxy_default(name: str) -> str:
    from nas.proxy import ProxyConfig

    return str(getattr(ProxyConfig(), name))


def _number(kind: type):
    """argparse type: a number of ``kind``, or ``all``/``none`` for a setting that can be switched off."""
    def convert(text: str):
        if str(text).lower() in ("all", "none"):
            return _OFF
        return kind(text)

    convert.__name__ = kind.__name__  # argparse names the type in its error message
    return convert


_OFF = "none"  # marks an explicit "no limit" (None in ProxyConfig), unlike an option left out


def build_parser() -> ArgumentParser:
    """The argparse parser; every default is None so recipe values and SearchConfig defaults show through."""
    p = ArgumentParser(prog="python -m nas.search", description=_DESCRIPTION, epilog=_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter, argument_default=None)
    p.add_argument("--config", metavar="FILE",
                   help="recipe YAML whose keys are these option names; command-line options override it")

    g = p.add_argument_group("what to search, under which budgets")
    g.add_argument("--space", help=f"search space: cvt, cvt13-nas, cct or a space YAML file "
                                   f"(default {_default('space')})")
    for m in BUDGETED:
        g.add_argument(m.budget_option, dest=m.budget_field, metavar=m.budget_metavar, help=m.budget_help)
    g.add_argument("--objectives", metavar="LIST",
                   help=f"comma-separated, from {', '.join(METRICS)}; accuracy is maximised, costs minimised "
                        f"(default accuracy,latency with a latency budget, else accuracy,macs)")
    g.add_argument("--resolution", type=int, metavar="PX",
                   help="input size at which MACs and latency are computed (default: the space's, 224 for CvT)")
    g.add_argument("--num-classes", type=int, metavar="N",
                   help=f"classifier width used for costs: the deployment task's (default {_default('num_classes')}); "
                        "proxy training uses the dataset's classes")

    g = p.add_argument_group("latency")
    g.add_argument("--latency", choices=LATENCY_MODES,
                   help="measured on the device (default), or predicted by --latency-predictor")
    g.add_argument("--latency-predictor", metavar="FILE", help="predictor JSON built for the device (nas.cost)")
    g.add_argument("--device", help="device latency is measured on: cpu, cuda or cuda:N (default cpu); measurement "
                                    "never overlaps proxy training on the same device")
    g.add_argument("--batch-size", type=int, metavar="N", help="batch size of the latency measurement (default 1)")
    g.add_argument("--dtype", choices=list(DTYPES), help="dtype of the latency measurement (default fp32)")
    g.add_argument("--latency-threads", type=int, metavar="N",
                   help="CPU threads of a latency measurement on the CPU (default: all cores)")

    g = p.add_argument_group("search")
    g.add_argument("--trials", type=int, metavar="N",
                   help=f"proxy trainings to run; over-budget samples do not count (default {_default('trials')})")
    g.add_argument("--timeout", metavar="TIME",
                   help="stop starting new trials after this long, e.g. 900, 15m, 2h (running ones finish)")
    g.add_argument("--max-untrained", type=int, metavar="N",
                   help="stop after N over-budget or duplicate samples (default max(200, 10 x trials))")
    g.add_argument("--sampler", choices=list(SAMPLERS), metavar="NAME",
                   help="all of these handle several objectives and the budget constraints (Optuna 5): "
                        + "; ".join(f"{k}: {v}" for k, v in SAMPLERS.items()) + f" (default {_default('sampler')}). "
                        "Not offered: qmc (random on categorical spaces), cmaes (no categorical, one objective)")
    g.add_argument("--seed", type=int, help="seed of the sampler and of proxy training (default 0)")
    g.add_argument("--workers", type=int, metavar="N",
                   help="parallel proxy trainings (processes sharing the study); each gets its share of CPU "
                        "threads or its own GPU (default 1)")
    g.add_argument("--backend", choices=list(BACKENDS),
                   help="optuna (default): local processes; ray: Ray Tune trials on a local or joined Ray cluster, "
                        "watched in the Ray dashboard (options below)")

    g = p.add_argument_group("Ray backend (--backend ray; see docs/USAGE.md)")
    g.add_argument("--ray-address", metavar="ADDR",
                   help="join a running cluster: auto (the one 'ray start' left on this machine) or HOST:PORT of "
                        "the head node; default: start a local Ray bound to 127.0.0.1 and print its dashboard URL")
    g.add_argument("--cpus-per-trial", type=float, metavar="N",
                   help="CPUs each trial reserves, fractions allowed (default: the cluster's CPUs / --workers)")
    g.add_argument("--gpus-per-trial", type=float, metavar="N",
                   help="GPUs each trial reserves and trains on; fractions share a GPU (default 0: train on CPU)")
    g.add_argument("--scheduler", choices=SCHEDULERS,
                   help="asha: stop weak trials early on per-epoch proxy accuracy (they are recorded as pruned, "
                        "with their epochs, and never enter the Pareto front); none (default)")

    g = p.add_argument_group("data and proxy training")
    g.add_argument("--data", help="auto (CIFAR-10 if found, else sklearn digits with a warning), cifar10, digits, "
                                  "synthetic, imagefolder:PATH, fashion-mnist:PATH (default auto)")
    g.add_argument("--data-dir", metavar="DIR", help="data root for auto/cifar10 (default $CVT_NAS_DATA)")
    for name, (kind, text) in PROXY_OPTIONS.items():
        g.add_argument(f"--proxy-{name.replace('_', '-')}", type=_number(kind), dest=f"proxy_{name}", metavar="X",
                       help=f"{text} (default {_proxy_default(name)}; GPU defaults differ, see docs/USAGE.md)"
                       if name in GPU_DEFAULTS else f"{text} (default {_proxy_default(name)})")
    g.add_argument("--estimator", metavar="NAME",
                   help="how candidates are ranked: proxy (a short training with the settings above, the default) "
                        "or a training-free score: naswot, synflow, grad_norm (docs/performance.md says how well "
                        "each ranks)")
    g.add_argument("--train-device", help="cpu, cuda, cuda:N or auto: every visible GPU, else CPU (default auto)")
    g.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads shared by all workers (default: all cores)")

    g = p.add_argument_group("run directory")
    g.add_argument("--out", metavar="DIR", help="run directory (default runs/<study name>)")
    g.add_argument("--study-name", help="study name (default <space>-<budget>, e.g. cvt-13-nas-4gflops)")
    g.add_argument("--storage", metavar="URL",
                   help="Optuna storage: a journal file path or an sqlite:/// URL (default RUN_DIR/study.journal, "
                        "safe with several worker processes)")
    g.add_argument("--resume", action="store_true", default=None,
                   help="continue the study in the run directory (same settings; --trials, --timeout and "
                        "--workers may change)")
    return p


def _load_recipe(path: str, parser: ArgumentParser) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise UserError(f"cannot read recipe {path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise UserError(f"recipe {path} is not valid YAML: {getattr(err, 'problem', err)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"recipe {path} must be a mapping of option names to values, e.g. 'budget: 4GFLOPs'")
    dests = {a.dest for a in parser._actions} - {"help", "config"}
    recipe = {}
    for key, value in data.items():
        dest = str(key).lstrip("-").replace("-", "_")
        if dest not in dests:
            raise UserError(f"recipe {path}: unknown key {key!r}; keys are option names such as budget, "
                            f"space, trials, proxy-epochs (see python -m nas.search --help)")
        if dest == "objectives" and isinstance(value, list):
            value = ",".join(map(str, value))
        recipe[dest] = value
    return recipe


def parse_config(argv: Sequence[str] | None = None) -> SearchConfig:
    """Command line (plus recipe) -> validated :class:`SearchConfig`."""
    parser = build_parser()
    first, _ = parser.parse_known_args(argv)
    if first.config:
        parser.set_defaults(**_load_recipe(first.config, parser))
    args = vars(parser.parse_args(argv))
    args.pop("config")
    proxy = {k[len("proxy_"):]: args.pop(k) for k in list(args) if k.startswith("proxy_")}
    kwargs = {k: v for k, v in args.items() if v is not None}
    kwargs["proxy"] = {k: None if v == _OFF else v for k, v in proxy.items() if v is not None}
    return SearchConfig(**kwargs)
