"""The backend seam: what runs the trials of a search.

A backend takes a validated :class:`~nas.search.SearchConfig` and a prepared run directory (manifest
written, study created in its storage) and fills the study with trials. Everything else (preflight
checks, outputs, exports) is shared. Backends are registered by import path so that ``ray`` is imported
only when ``--backend ray`` is asked for. The evaluation pipeline a backend should reuse lives in
:mod:`nas.search._objective` (cost first, then proxy training) and :mod:`nas.search._records` (what is
stored on each trial).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol

from cvt import UserError

__all__ = ["Backend", "BACKENDS", "get_backend"]

# name -> "module:attribute" of a class implementing Backend.
BACKENDS: dict[str, str] = {
    "optuna": "nas.search._optuna_backend:OptunaBackend",
    "ray": "nas.search._ray_backend:RayBackend",
}


class Backend(Protocol):
    """Runs trials into the study named ``config.name`` in the run directory's storage."""

    def run(self, config: Any, run_dir: Path, *, resolution: int | None = None, dataset: Any = None,
            progress: Any = None) -> str:
        """Run until ``--trials`` estimates, ``--timeout`` or the untrained-sample guard (``_trials.stop_reason``).

        Args:
            config: the validated search (a ``SearchConfig``, which imports this module: not annotated).
            run_dir: prepared run directory (manifest written, study created, run lock held by the caller).
            resolution: deployment resolution for costs (resolved by the preflight).
            dataset: the dataset the preflight loaded (reusable in this process).
            progress: object with ``refresh()``, to call after every trial and proxy epoch.

        Returns:
            Why the search stopped, one line.
        """

    # Optional: ``preflight(config)``, called before the run directory is touched, raises UserError for
    # what only the backend can check (the Ray backend joins its cluster and checks its resources there).


def get_backend(name: str) -> Backend:
    """An instance of the backend registered as ``name``."""
    try:
        module_name, attr = BACKENDS[name].split(":")
    except KeyError:
        raise UserError(f"unknown backend {name!r}; use one of {', '.join(BACKENDS)}") from None
    return getattr(importlib.import_module(module_name), attr)()
