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
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Sequence

import cvt
from cvt import UserError

from ._cli import ArgumentParser, run_main

__all__ = ["main", "export_run", "export_trials", "select_trials", "load_run"]

# Config class -> a timm model name that takes ``config=`` (any variant of the family does).
_TIMM_NAMES = {"CvTConfig": "cvt_13", "CCTConfig": "cct_7_3x1_32"}
FORMATS = ("yaml", "json")


def load_run(run_dir: str | Path):
    """(manifest, SearchConfig, study) of a run directory, read-only; UserError if it is not one."""
    import optuna

    from .search._rundir import RunDir, journal_path, open_storage

    run = RunDir(run_dir)
    manifest = run.read_manifest()
    config = run.stored_config()
    journal = journal_path(config.storage, run.path)
    if journal is not None and not journal.is_file():
        raise UserError(f"{run.path} has no study storage ({journal.name} is missing); nothing to export")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=config.name, storage=open_storage(config.storage, run.path))
    except Exception as err:  # noqa: BLE001 - an unreadable store is the user's corrupt run, reported in one line
        raise UserError(f"cannot read the study of {run.path} ({type(err).__name__}: {err})") from None
    return manifest, config, study


def select_trials(study: Any, objectives: Sequence[str], *, top: int | None = None, pareto: bool = False,
                  trial: int | None = None) -> list[Any]:
    """The trained, within-budget trials to export: the Pareto front, the ``top`` most accurate, or one.

    Raises:
        UserError: the run has no trained trial, or ``trial`` was not trained within budget.
    """
    from .search._records import is_trained, pareto_rows, trial_row

    trials = study.get_trials(deepcopy=False)
    trained = [t for t in trials if is_trained(t) and all(v <= 0 for v in t.constraints.values())]
    if trial is not None:
        match = [t for t in trials if t.number == trial]
        if not match:
            raise UserError(f"the run has no trial {trial} (it has trials 0-{len(trials) - 1})")
        if match[0] not in trained:
            status = match[0].user_attrs.get("status") or match[0].state.name.lower()
            raise UserError(f"trial {trial} was not trained within budget (status {status}); "
                            f"export a trained one (see trials.csv)")
        return match
    if not trained:
        raise UserError(f"the run has no trained trial to export ({len(trials)} trial(s), none trained within "
                        f"budget); run or resume the search first")
    if top is not None:
        if top < 1:
            raise UserError(f"--top {top}: give a positive count")
        by_arch = {}
        for t in sorted(trained, key=lambda t: (-t.user_attrs["accuracy"], t.number)):
            by_arch.setdefault(t.user_attrs.get("arch_id"), t)
        return list(by_arch.values())[:top]
    numbers = [r["number"] for r in pareto_rows([trial_row(t) for t in trained], objectives)]
    by_number = {t.number: t for t in trained}
    return [by_number[n] for n in numbers]


def _model_config(attrs: dict[str, Any], resolution: int | None):
    family = attrs.get("model_family", "CvTConfig")
    config = getattr(cvt, family).from_dict(attrs["model_config"])
    # TRAIN.IMAGE_SIZE records the resolution the costs were computed at.
    if resolution and getattr(config, "img_size", resolution) != resolution:
        config = config.replace(img_size=resolution)
    return config


def _provenance(trial: Any, manifest: dict[str, Any], config: Any) -> dict[str, Any]:
    import nas

    attrs = trial.user_attrs
    latency = None
    if attrs.get("latency_ms") is not None:
        latency = {"ms": attrs["latency_ms"], "iqr_ms": attrs.get("latency_iqr_ms"),
                   "device": attrs.get("latency_device"), "source": attrs.get("latency_source"),
                   "batch_size": config.batch_size, "dtype": config.dtype}
    dataset = manifest.get("dataset") or {}
    return {
        "cvt_nas_version": nas.__version__, "study": config.name, "trial": trial.number,
        "arch_id": attrs.get("arch_id"), "space": config.space, "sampler": config.sampler, "seed": config.seed,
        "budgets": {k: str(b) for k, b in config.budgets.items()},
        "resolution": attrs.get("resolution"), "num_classes": config.num_classes,
        "macs": attrs.get("macs"), "params": attrs.get("params"), "latency": latency,
        "proxy_accuracy": attrs.get("accuracy"), "proxy_best_accuracy": attrs.get("best_accuracy"),
        "proxy_epochs": attrs.get("epochs"), "proxy": manifest.get("proxy"),
        "dataset": {k: dataset.get(k) for k in ("name", "source", "num_classes", "train_size", "val_size")
                    if k in dataset} or dataset,
    }


def _header(p: dict[str, Any], family: str, filename: str) -> str:
    res = p["resolution"]
    lat = p["latency"]
    latency = "not measured (no latency budget or objective)"
    if lat:
        iqr = "" if lat["iqr_ms"] is None else f" (IQR {lat['iqr_ms']:.3f})"
        latency = (f"{lat['ms']:.3f} ms{iqr} {lat['source']} on {lat['device']}, batch {lat['batch_size']}, "
                   f"{lat['dtype']}, {res}x{res}")
    proxy = ", ".join(f"{k}={v}" for k, v in (p["proxy"] or {}).items() if v is not None)
    dataset = ", ".join(f"{k} {v}" for k, v in p["dataset"].items() if k != "name")
    name = _TIMM_NAMES.get(family, "cvt_13")
    return "\n".join([
        f"cvt-nas {p['cvt_nas_version']}: trial {p['trial']} of study {p['study']} (arch {p['arch_id']})",
        f"space {p['space']}, sampler {p['sampler']}, seed {p['seed']}, "
        f"budgets: {', '.join(p['budgets'].values()) or 'none'}",
        f"MACs: {p['macs'] / 1e9:.4f} G at {res}x{res}, {p['num_classes']} classes "
        f"(conv + linear + attention matmuls: the CvT paper's FLOPs)",
        f"params: {p['params'] / 1e6:.4f} M ({p['params']:,}) with {p['num_classes']} classes",
        f"latency: {latency}",
        f"proxy accuracy: {p['proxy_accuracy']:.2f}% top-1 after {p['proxy_epochs']} epoch(s) "
        f"(best epoch {p['proxy_best_accuracy']:.2f}%), a ranking signal, not a full-training result",
        f"proxy settings: {proxy}",
        f"dataset: {p['dataset'].get('name', '?')}" + (f" ({dataset})" if dataset else ""),
        f"load: cvt.{family}.from_yaml('{filename}') or timm.create_model('{name}', config='{filename}', "
        f"num_classes=N) after `import cvt`",
    ])


def export_trials(trials: Sequence[Any], manifest: dict[str, Any], config: Any, out: str | Path,
                  fmt: str = "yaml") -> list[Path]:
    """Write one config file per trial into ``out``; returns the paths."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: use yaml or json")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for trial in trials:
        model_config = _model_config(trial.user_attrs, trial.user_attrs.get("resolution"))
        path = out / f"{config.slug}-t{trial.number:03d}.{fmt}"
        provenance = _provenance(trial, manifest, config)
        if fmt == "yaml":
            model_config.to_yaml(path, header=_header(provenance, type(model_config).__name__, path.name))
        else:
            path.write_text(json.dumps({**model_config.to_dict(), "NAS": provenance}, indent=2) + "\n")
        paths.append(path)
    return paths


def export_run(run_dir: str | Path, *, study: Any = None, fmt: str = "yaml") -> list[Path]:
    """The search's own exports: ``RUN_DIR/exports/pareto/`` (the front) and ``exports/best/`` (the most
    accurate trial within budget)."""
    manifest, config, loaded = load_run(run_dir)
    study = study or loaded
    front = select_trials(study, config.objective_names, pareto=True)  # most accurate first
    paths = export_trials(front, manifest, config, Path(run_dir) / "exports" / "pareto", fmt)
    return paths + export_trials(front[:1], manifest, config, Path(run_dir) / "exports" / "best", fmt)


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
    args = parser.parse_args(argv)
    manifest, config, study = load_run(args.run_dir)
    trials = select_trials(study, config.objective_names, top=args.top, trial=args.trial)
    for path in export_trials(trials, manifest, config, args.out or Path(args.run_dir) / "exports", args.format):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
