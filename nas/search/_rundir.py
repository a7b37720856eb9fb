"""The run directory: manifest, study storage, locks, and the checks behind ``--resume``.

Layout::

    RUN_DIR/run.json          manifest: tool, version, study name, storage, the SearchConfig, dataset
    RUN_DIR/study.journal     Optuna JournalStorage (append-only, safe with several processes)
    RUN_DIR/.run.lock         held (fcntl) by the search process for its whole life
    RUN_DIR/.device-*.lock    training holds it shared, latency measurement exclusive
    RUN_DIR/trials.csv, pareto.csv, *.png, *.html, exports/   outputs

Nothing here deletes user files: a foreign or corrupt directory is reported and left as it is.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from cvt import UserError

from .._paths import atomic_path, flocked
from ._config import SearchConfig

__all__ = ["RunDir", "DeviceLock", "open_storage", "JOURNAL", "CHECKPOINTS", "MANIFEST"]

_log = logging.getLogger(__name__)

MANIFEST = "run.json"
JOURNAL = "study.journal"
CHECKPOINTS = "checkpoints"  # RUN_DIR/checkpoints/<arch_id>/rung-<r>.pt: the rungs' training states
TOOL = "cvt-nas"


def open_storage(spec: str | None, run_dir: Path):
    """An Optuna storage: None -> RUN_DIR/study.journal; a path -> journal file; a URL -> RDB storage."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if spec and "://" in spec:
        return optuna.storages.RDBStorage(spec)
    path = Path(spec) if spec else run_dir / JOURNAL
    return JournalStorage(JournalFileBackend(str(path)))


def journal_path(spec: str | None, run_dir: Path) -> Path | None:
    """The journal file behind a storage spec (None for RDB URLs)."""
    if spec and "://" in spec:
        return None
    return Path(spec) if spec else run_dir / JOURNAL


class RunDir:
    """A run directory; hold :meth:`lock` while searching in it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock_file = None
        self._made = False

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    # ------------------------------------------------------------------ lifecycle
    def _startup_leftovers(self) -> list[Path] | None:
        """The files of a run that was killed before it started (lock files, a journal without its run.json:
        the manifest is written before any trial runs), or None if the directory holds anything else."""
        if not self.path.is_dir() or self.manifest_path.exists():
            return None
        files = list(self.path.iterdir())
        ours = (JOURNAL, JOURNAL + ".lock")  # the journal and the lock Optuna takes while writing it
        if all((p.is_file() or p.is_symlink()) and (p.name.startswith(".") or p.name in ours) for p in files):
            return files
        return None

    def create(self) -> None:
        """Make a new run directory and lock it; refuses one that already holds files (other than the
        leftovers of a run killed before it started, which are removed)."""
        leftovers = self._startup_leftovers()
        if leftovers:
            _log.warning("removing %s left in %s by a search killed before it started",
                         ", ".join(sorted(p.name for p in leftovers)), self.path)
            for p in leftovers:
                p.unlink()
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            what = "a cvt-nas search" if self.manifest_path.exists() else "other files"
            raise UserError(f"run directory {self.path} already holds {what}; add --resume to continue it, "
                            f"or choose a new one with --out DIR")
        self._made = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        self.lock()

    def abandon(self) -> None:
        """Undo :meth:`create` when the run could not start: the directory goes if this run made it and holds
        nothing but its own lock files; otherwise it stays as it is."""
        self.unlock()
        leftovers = [p for p in self.path.iterdir() if not p.name.startswith(".")] if self.path.is_dir() else []
        if self._made and not leftovers:
            for p in self.path.iterdir():
                p.unlink()
            self.path.rmdir()

    def write_manifest(self, config: SearchConfig, extra: dict[str, Any]) -> None:
        """Write ``run.json``: last, once the study exists, so a directory with a manifest can always resume."""
        manifest = {"tool": TOOL, "version": _version(), "created": _now(), "study_name": config.name,
                    "config": config.to_dict(), **extra}  # the config carries its layout version
        with atomic_path(self.manifest_path) as tmp:
            tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n")

    def update_manifest(self, **entries: Any) -> None:
        """Add or replace top-level entries of ``run.json`` (e.g. the self-check), atomically."""
        manifest = {**self.read_manifest(), **entries}
        with atomic_path(self.manifest_path) as tmp:
            tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n")

    def read_manifest(self) -> dict[str, Any]:
        """The manifest; UserError if this is not (or no longer) a cvt-nas run directory."""
        if not self.path.is_dir():
            raise UserError(f"{self.path} is not a run directory (it does not exist)")
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except FileNotFoundError:
            raise UserError(f"{self.path} is not a cvt-nas run directory (no {MANIFEST}); "
                            f"point --out at the directory a search created") from None
        except (OSError, ValueError) as err:
            raise UserError(f"{self.manifest_path} is corrupt ({err}); the run directory was left as it is") from None
        if not isinstance(manifest, dict) or manifest.get("tool") != TOOL or "config" not in manifest:
            raise UserError(f"{self.manifest_path} was not written by cvt-nas; point --out at the directory "
                            f"a search created")
        return manifest

    def stored_config(self) -> SearchConfig:
        manifest = self.read_manifest()
        try:
            return SearchConfig.from_dict(manifest["config"])
        except (UserError, TypeError) as err:
            raise UserError(f"{self.manifest_path} holds an invalid search config ({err})") from None

    def check_resume(self, config: SearchConfig) -> None:
        """Refuse to resume with settings that would make it a different search."""
        if not self.path.exists():
            raise UserError(f"nothing to resume: {self.path} does not exist; start the search without --resume")
        stored = self.stored_config()
        diff = stored.differences(config)
        if diff:
            before, now = stored.flat(), config.flat()
            detail = ", ".join(f"{k}: {before[k]!r} (run) vs {now[k]!r} (now)" for k in diff)
            raise UserError(f"--resume with different settings than {self.path} was started with: {detail}; "
                            f"use the same settings or a new --out")
        journal = journal_path(config.run.storage, self.path)
        if journal is not None and not journal.is_file():
            raise UserError(f"{self.path} has no study journal ({journal} is missing), so there is nothing to "
                            f"resume; the run directory was left as it is (start a new run with another --out)")

    def check_complete(self, trials: list[Any]) -> None:
        """Refuse a study that lacks trials ``trials.csv`` records: its journal was damaged, and resuming would
        overwrite the only surviving record of them."""
        listed = self.path / "trials.csv"
        if not listed.is_file():
            return
        import csv

        with open(listed, newline="") as f:
            numbers = {int(row["number"]) for row in csv.DictReader(f) if row.get("number", "").isdigit()}
        missing = sorted(numbers - {t.number for t in trials})
        if missing:
            raise UserError(f"the study journal of {self.path} lacks {len(missing)} trial(s) that trials.csv records "
                            f"(e.g. trial {missing[0]}): the journal is damaged; restore it from a backup or start a "
                            f"new run with another --out (the run directory was left as it is)")

    # ------------------------------------------------------------------ locks
    def lock(self) -> None:
        """Take the run lock for this process's lifetime (released by the kernel even on kill -9)."""
        handle = open(self.path / ".run.lock", "a")  # never written: a resume leaves the directory as it was
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise UserError(f"{self.path} is in use by a running search; wait for it to finish or use another "
                            f"--out") from None
        self._lock_file = handle

    def unlock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def repair_journal(self, spec: str | None, check: Any = None) -> None:
        """Make a journal left by a killed process appendable again (run lock held, so nobody else writes).

        A ``kill -9`` can leave the journal's lock file behind and, in the middle of a write, a last line
        without its newline; both are harmless to remove once no search process is alive. Any other
        undecodable line means the file is corrupt: that is reported, nothing is changed. ``check`` (given
        the trials the complete records hold) may refuse the journal before the torn record is dropped, so
        a refused journal stays byte for byte as it was.
        """
        path = journal_path(spec, self.path)
        if path is None or not path.exists():
            return
        data = path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        for number, line in enumerate(complete.splitlines(), start=1):
            try:
                json.loads(line)
            except ValueError:
                raise UserError(f"{path} is corrupt at line {number} (not an Optuna journal record); the run "
                                f"directory was left as it is") from None
        if check is not None:
            check(_trials_of(complete, spec))
        stale = Path(str(path) + ".lock")
        if stale.is_symlink() or stale.exists():
            _log.warning("removing the stale journal lock %s left by a killed process", stale)
            stale.unlink()
        if len(complete) != len(data):
            _log.warning("dropping an unfinished record at the end of %s (written when the search was killed)",
                         path)
            with open(path, "r+b") as f:
                f.truncate(len(complete))


def _trials_of(journal: bytes, spec: str | None) -> list[Any]:
    """The trials that the journal records ``journal`` hold (read from a private copy)."""
    import tempfile

    import optuna

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / JOURNAL
        copy.write_bytes(journal)
        storage = open_storage(str(copy), Path(tmp))
        return [t for s in optuna.get_all_study_summaries(storage) for t in
                optuna.load_study(study_name=s.study_name, storage=storage).get_trials(deepcopy=False)]


@contextlib.contextmanager
def claim_lock(run_dir: Path) -> Iterator[None]:
    """The run directory's claim lock: one worker at a time counts trials and asks for a new one."""
    with open(run_dir / ".claim.lock", "a+") as handle, flocked(handle):
        yield


class DeviceLock:
    """Keeps latency measurement and proxy training apart on one device, across worker processes.

    Training holds the device lock shared and lets it go at every epoch boundary; measurement holds it
    exclusively. A second "gate" lock keeps measurement from starving: a measurer closes the gate, new
    epochs wait at it, running epochs finish, and the measurement gets the device to itself.
    """

    def __init__(self, run_dir: Path, device: str):
        name = re.sub(r"[^a-z0-9]+", "", device.lower()) or "cpu"
        self._device = open(run_dir / f".device-{name}.lock", "a+")
        self._gate = open(run_dir / f".device-{name}.gate", "a+")
        self._held = False

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """The device to this process alone (for a latency measurement)."""
        with flocked(self._gate), flocked(self._device):
            yield

    def _acquire_shared(self) -> None:
        fcntl.flock(self._gate, fcntl.LOCK_SH)  # waits while a measurement is pending
        fcntl.flock(self._gate, fcntl.LOCK_UN)
        fcntl.flock(self._device, fcntl.LOCK_SH)
        self._held = True

    @contextlib.contextmanager
    def shared(self) -> Iterator["DeviceLock"]:
        """Hold the device for training; call :meth:`epoch_boundary` between epochs."""
        self._acquire_shared()
        try:
            yield self
        finally:
            fcntl.flock(self._device, fcntl.LOCK_UN)
            self._held = False

    def epoch_boundary(self) -> None:
        """Let a waiting measurement run, then take the device back."""
        if self._held:
            fcntl.flock(self._device, fcntl.LOCK_UN)
            self._acquire_shared()

    def close(self) -> None:
        self._device.close()
        self._gate.close()


def _version() -> str:
    import nas

    return nas.__version__


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
