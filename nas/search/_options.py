"""Command line of ``python -m nas.search``, generated from the settings' fields -> :class:`SearchConfig`.

Every option comes from one field of a settings group (``nas/search/_config.py``) or of ``ProxyConfig``
(``--proxy-<field>``), with the help and default that field declares. A recipe (``--config FILE``) is a YAML
mapping whose keys are the option names (``latency-budget`` or ``latency_budget``); options given on the command
line override it.
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from cvt import UserError

from ..cli import ArgumentParser
from ._config import GROUPS, SearchConfig, option_fields

__all__ = ["build_parser", "parse_config"]

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
  python -m nas.search --estimator supernet --budget 3GFLOPs   # weight sharing: score 1000, confirm the best 3

watch live: optuna-dashboard RUN_DIR/study.journal --host 127.0.0.1   (the command is printed at start)
export:     python -m nas.export RUN_DIR --pareto   (--with-weights after a supernet search)"""

_OFF = "none"  # marks an explicit "no limit" (None in ProxyConfig), unlike an option left out


def _number(kind: type):
    """argparse type: a number of ``kind``, or ``all``/``none`` for a setting that can be switched off."""
    def convert(text: str):
        if str(text).lower() in ("all", "none"):
            return _OFF
        return kind(text)

    convert.__name__ = kind.__name__  # argparse names the type in its error message
    return convert


def _default_text(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return "none" if value is None else str(value)


def _add(group: Any, f: dataclasses.Field, dest: str, option: str, default: Any, note: str = "") -> None:
    meta = f.metadata
    help_text = meta["help"]
    if not meta.get("flag") and "(default" not in help_text:
        help_text += f" (default {_default_text(default)}{note})"
    kwargs: dict[str, Any] = {"dest": dest, "help": help_text}
    if meta.get("flag"):
        kwargs.update(action="store_true", default=None)
    else:
        if meta.get("choices"):
            kwargs["choices"] = list(meta["choices"])
        if meta.get("kind"):
            kwargs["type"] = meta["kind"]
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
    group.add_argument(option, **kwargs)


def build_parser() -> ArgumentParser:
    """The parser; every default is None so recipe values and the settings' defaults show through."""
    from nas.proxy import GPU_DEFAULTS, ProxyConfig

    p = ArgumentParser(prog="python -m nas.search", description=_DESCRIPTION, epilog=_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter, argument_default=None)
    p.add_argument("--config", metavar="FILE",
                   help="recipe YAML whose keys are these option names; command-line options override it")
    for cls in GROUPS.values():
        g = p.add_argument_group(cls.TITLE)
        for f in dataclasses.fields(cls):
            if f.name == "proxy":  # one option per ProxyConfig field instead
                for pf in dataclasses.fields(ProxyConfig):
                    if not pf.metadata.get("option"):
                        continue
                    note = "; GPU defaults differ, see docs/USAGE.md" if pf.name in GPU_DEFAULTS else ""
                    g.add_argument(f"--proxy-{pf.name.replace('_', '-')}", type=_number(pf.metadata["kind"]),
                                   dest=f"proxy_{pf.name}", metavar="X",
                                   help=f"{pf.metadata['help']} (default {_default_text(pf.default)}{note})")
                continue
            option = f.metadata.get("option") or "--" + f.name.replace("_", "-")
            default = f.default if f.default is not dataclasses.MISSING else None
            _add(g, f, f.name, option, default)
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
        if isinstance(value, list):  # objectives, rungs: the comma-separated form of the option
            value = ",".join(map(str, value))
        recipe[dest] = value
    return recipe


def _attach_values(argv: Sequence[str], parser: ArgumentParser) -> list[str]:
    """``--budget -1G`` -> ``--budget=-1G``: argparse reads a value that starts with ``-`` as an option, and says
    only "expected one argument"; attached, the value reaches its own check, which names what is wrong."""
    takes_value = {o for a in parser._actions if a.option_strings and a.nargs != 0 for o in a.option_strings}
    out: list[str] = []
    for token in argv:
        if out and out[-1] in takes_value and re.match(r"^-[\d.]", token):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def parse_config(argv: Sequence[str] | None = None) -> SearchConfig:
    """Command line (plus recipe) -> validated :class:`SearchConfig`."""
    parser = build_parser()
    argv = _attach_values(sys.argv[1:] if argv is None else argv, parser)
    first, _ = parser.parse_known_args(argv)
    if first.config:
        parser.set_defaults(**_load_recipe(first.config, parser))
    args = vars(parser.parse_args(argv))
    args.pop("config")
    proxy = {k[len("proxy_"):]: args.pop(k) for k in list(args) if k.startswith("proxy_")}
    settings = {k: v for k, v in args.items() if v is not None and k in option_fields()}
    settings["proxy"] = {k: None if v == _OFF else v for k, v in proxy.items() if v is not None}
    return SearchConfig.create(**settings)
