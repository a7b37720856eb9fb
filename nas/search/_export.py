"""Searched architectures as reference-format configs with a provenance header (``python -m nas.export``).

Each export is the reference's experiment YAML (``MODEL.SPEC``, per-block values as nested lists), named
``<space>-<budget>-t<trial>.yaml``, with a comment header recording where it came from: every cost metric
(``nas.metrics``), proxy accuracy and settings, dataset, space, sampler, seed, trial and the cvt-nas version.
``run_search`` writes the run's own exports with :func:`export_run`; the command exports any selection.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import cvt
from cvt import UserError

from .._paths import atomic_path
from ..metrics import COSTS
from ._records import is_trained, pareto_rows, trial_row
from ._rundir import RunDir, journal_path, open_storage

__all__ = ["export_run", "export_trials", "select_trials", "load_run", "FORMATS"]

FORMATS = ("yaml", "json")  # what export_trials writes


def load_run(run_dir: str | Path):
    """(manifest, SearchConfig, study) of a run directory, read-only; UserError if it is not one."""
    import optuna


    run = RunDir(run_dir)
    manifest = run.read_manifest()
    config = run.stored_config()
    journal = journal_path(config.run.storage, run.path)
    if journal is not None and not journal.is_file():
        raise UserError(f"{run.path} has no study storage ({journal.name} is missing); nothing to export")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=config.name, storage=open_storage(config.run.storage, run.path))
    except Exception as err:  # noqa: BLE001 - an unreadable store is the user's corrupt run, reported in one line
        raise UserError(f"cannot read the study of {run.path} ({type(err).__name__}: {err})") from None
    return manifest, config, study


def select_trials(study: Any, objectives: Sequence[str], *, top: int | None = None, pareto: bool = False,
                  trial: int | None = None) -> list[Any]:
    """The trained, within-budget trials to export: the Pareto front, the ``top`` most accurate, or one.

    Raises:
        UserError: the run has no trained trial, or ``trial`` was not trained within budget.
    """

    trials = study.get_trials(deepcopy=False)
    within = [t for t in trials if is_trained(t) and all(v <= 0 for v in t.constraints.values())]
    trained = [t for t in within if not t.user_attrs.get("screening")]  # a screening estimate is not a pick
    if trial is not None:  # any estimated trial, a screened one included (its header says so)
        match = [t for t in trials if t.number == trial]
        if not match:
            raise UserError(f"the run has no trial {trial} (it has trials 0-{len(trials) - 1})")
        if match[0] not in within:
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
        by_arch = {}  # each architecture at its highest rung; the highest rungs first, then the most accurate
        for t in sorted(trained, key=lambda t: (-t.user_attrs.get("rung", 0), -t.user_attrs["accuracy"], t.number)):
            by_arch.setdefault(t.user_attrs.get("arch_id"), t)
        return list(by_arch.values())[:top]
    numbers = [r["number"] for r in pareto_rows([trial_row(t) for t in trained], objectives)]
    by_number = {t.number: t for t in trained}
    return [by_number[n] for n in numbers]


def _model_config(attrs: dict[str, Any], resolution: int | None):
    family = cvt.family_named(attrs.get("model_family", "CvTConfig"))
    config = family.config_cls.from_dict(attrs["model_config"])
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
                   "batch_size": config.latency.batch_size, "dtype": config.latency.dtype}
    dataset = manifest.get("dataset") or {}
    return {
        "cvt_nas_version": nas.__version__, "study": config.name, "trial": trial.number,
        "arch_id": attrs.get("arch_id"), "space": config.space.space, "sampler": config.sampling.sampler,
        "seed": config.sampling.seed,
        "budgets": {k: str(b) for k, b in config.space.budgets.items()},
        "resolution": attrs.get("resolution"), "num_classes": config.space.num_classes,
        "macs": attrs.get("macs"), "params": attrs.get("params"), "latency": latency,
        "proxy_accuracy": attrs.get("accuracy"), "proxy_best_accuracy": attrs.get("best_accuracy"),
        "proxy_epochs": attrs.get("epochs"), "proxy": manifest.get("proxy"),
        "screening": bool(attrs.get("screening", False)), "rung": attrs.get("rung", 0),
        "rung_budget": attrs.get("rung_budget", 1), "rungs": list(config.promotion.rungs),
        "rung_growth": config.promotion.rung_growth,
        "self_check": (manifest.get("self_check") or {}).get("verdict", {}).get("text"),
        "dataset": {k: dataset.get(k) for k in ("name", "source", "num_classes", "train_size", "val_size")
                    if k in dataset} or dataset,
    }


def _header(p: dict[str, Any], family: str, filename: str) -> str:
    proxy = ", ".join(f"{k}={v}" for k, v in (p["proxy"] or {}).items() if v is not None)
    dataset = ", ".join(f"{k} {v}" for k, v in p["dataset"].items() if k != "name")
    name = cvt.family_named(family).timm_name
    return "\n".join([
        f"cvt-nas {p['cvt_nas_version']}: trial {p['trial']} of study {p['study']} (arch {p['arch_id']})",
        f"space {p['space']}, sampler {p['sampler']}, seed {p['seed']}, "
        f"budgets: {', '.join(p['budgets'].values()) or 'none'}",
        *(m.header(p) for m in COSTS if m.header is not None),
        (f"inherited accuracy: {p['proxy_accuracy']:.2f}% top-1 with weights from the search's supernet, not "
         f"trained on its own: a ranking signal" if p["screening"] else
         f"proxy accuracy: {p['proxy_accuracy']:.2f}% top-1 after {p['proxy_epochs']} epoch(s) "
         f"(best epoch {p['proxy_best_accuracy']:.2f}%), a ranking signal, not a full-training result"),
        f"fidelity: rung {p['rung']} of 0-{len(p['rungs']) - 1}, {p['rung_budget']}x the proxy budget (rungs "
        f"{'/'.join(f'{m}x' for m in p['rungs'])}, growing {p['rung_growth']})",
        f"proxy settings: {proxy}",
        *([f"self-check: {p['self_check']}"] if p["self_check"] else []),
        f"dataset: {p['dataset'].get('name', '?')}" + (f" ({dataset})" if dataset else ""),
        f"load: cvt.{family}.from_yaml('{filename}') or timm.create_model('{name}', config='{filename}', "
        f"num_classes=N) after `import cvt`",
        *([_weights_line(p["weights"], name, filename)] if p.get("weights") else []),
    ])


def _weights_line(w: dict[str, Any], name: str, filename: str) -> str:
    return (f"weights: {w['file']}, inherited from supernet {w['inherited_from']} ({w['num_classes']} classes of "
            f"{w['dataset']}, {w['in_chans']} input channels); start fine-tuning from them with "
            f"timm.create_model('{name}', config='{filename}', num_classes={w['num_classes']}, "
            f"in_chans={w['in_chans']}, pretrained=True, pretrained_cfg_overlay=dict(file='{w['file']}', "
            f"num_classes={w['num_classes']})) or cvt.load_checkpoint(model, '{w['file']}')")


def _run_supernet(manifest: dict[str, Any], config: Any) -> Any:
    """The supernet a run's candidates were scored with (``UserError`` when the run had none or it is gone)."""
    from nas.supernet import load_supernet

    directory = (manifest.get("estimator") or {}).get("supernet")
    if directory is None:
        raise UserError(f"--with-weights: this run was searched with --estimator {config.training.estimator}, so its "
                        f"architectures have no weights to inherit; search with --estimator supernet")
    path = Path(directory) / "supernet.pt"
    if not path.is_file():
        raise UserError(f"--with-weights: the run's supernet {path} is gone (a cleared cache?); running the same "
                        f"search again trains it again")
    return load_supernet(path)


def _write_weights(path: Path, supernet: Any, model_config: Any, provenance: dict[str, Any]) -> None:
    """The member's inherited weights as a plain CvT state_dict (safetensors, with where they came from)."""
    from safetensors.torch import save_file

    model = supernet.model.extract(model_config.replace(in_chans=supernet.model.covering.in_chans))
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={k: str(v) for k, v in provenance["weights"].items()})


def export_trials(trials: Sequence[Any], manifest: dict[str, Any], config: Any, out: str | Path,
                  fmt: str = "yaml", *, with_weights: bool = False) -> list[Path]:
    """Write one config file per trial into ``out`` (and, ``with_weights``, its weights inherited from the run's
    supernet beside it, ``.safetensors``); returns the paths."""
    supernet = _run_supernet(manifest, config) if with_weights else None
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: use yaml or json")
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"--out {out}: a file is in the way of this folder; choose another --out") from None
    except PermissionError:
        raise UserError(f"--out {out}: not writable (read-only or not yours); choose another --out") from None
    paths = []
    for trial in trials:
        model_config = _model_config(trial.user_attrs, trial.user_attrs.get("resolution"))
        path = out / f"{config.space.slug}-t{trial.number:03d}.{fmt}"
        provenance = _provenance(trial, manifest, config)
        if supernet is not None:
            weights = path.with_suffix(".safetensors")
            provenance["weights"] = {"file": weights.name, "inherited_from": supernet.path.parent.name,
                                     "arch_id": trial.user_attrs.get("arch_id"),
                                     "num_classes": supernet.model.num_classes,
                                     "in_chans": supernet.model.covering.in_chans,
                                     "dataset": (manifest.get("dataset") or {}).get("name")}
            _write_weights(weights, supernet, model_config, provenance)
            paths.append(weights)
        with atomic_path(path) as tmp:
            if fmt == "yaml":
                model_config.to_yaml(tmp, header=_header(provenance, type(model_config).__name__, path.name))
            else:
                tmp.write_text(json.dumps({**model_config.to_dict(), "NAS": provenance}, indent=2) + "\n")
        paths.append(path)
    return paths


def export_run(run_dir: str | Path, *, study: Any = None, front: Sequence[int] | None = None,
               fmt: str = "yaml") -> list[Path]:  # configs only: weights are written on request (nas.export)
    """The search's own exports: ``RUN_DIR/exports/pareto/`` (the front) and ``exports/best/`` (the most
    accurate trial within budget). ``front``: the front's trial numbers, most accurate first, when the
    caller has computed it already."""
    manifest, config, loaded = load_run(run_dir)
    study = study or loaded
    if front is None:
        trials = select_trials(study, config.space.objective_names, pareto=True)  # most accurate first
    else:
        by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
        trials = [by_number[n] for n in front]
    paths = []
    for folder, chosen in (("pareto", trials), ("best", trials[:1])):
        out = Path(run_dir) / "exports" / folder
        written = export_trials(chosen, manifest, config, out, fmt)
        # A resumed search's front moves on: the run's own export folders hold exactly the current one.
        for stale in set(out.glob(f"{config.space.slug}-t*.{fmt}")) - set(written):
            stale.unlink()
        paths += written
    return paths
