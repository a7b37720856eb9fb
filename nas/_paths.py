"""Where cvt-nas keeps files outside a run directory, and how every room writes a file whole or not at all."""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Any, Iterator

__all__ = ["default_data_root", "default_cache_dir", "atomic_path", "flocked", "locked", "read_saved"]


def default_data_root() -> Path:
    """Where datasets are looked for (and CIFAR-10 downloaded): ``$CVT_NAS_DATA`` or ``~/.cache/cvt-nas/data``."""
    env = os.environ.get("CVT_NAS_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cvt-nas" / "data"


def default_cache_dir() -> Path:
    """Caches (decoded image folders, latency measurements): ``$CVT_NAS_CACHE`` or ``~/.cache/cvt-nas``."""
    env = os.environ.get("CVT_NAS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cvt-nas"


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary file next to ``path`` to write instead; it replaces ``path`` when the block ends without an
    error, so a kill or a full disk never leaves half a file (and an error leaves the old one as it was)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def flocked(handle: Any, mode: int = fcntl.LOCK_EX) -> Iterator[None]:
    """Hold an ``flock`` on an open file for the block (the kernel releases it if the process dies)."""
    fcntl.flock(handle, mode)
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """One process at a time in the block, across processes: an ``flock`` on the directory holding ``path`` (a
    file replaced by :func:`atomic_path` changes inode, so it cannot carry the lock itself; no lock file is left
    behind)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        with flocked(fd):
            yield
    finally:
        os.close(fd)


def read_saved(path: Path, fmt: str, what: str) -> dict[str, Any]:
    """A dict written by ``torch.save`` whose ``"format"`` is ``fmt``; a ``UserError`` naming the file as not a
    readable ``what`` otherwise (nothing else is touched: deleting it is the user's call)."""
    import pickle

    import torch

    from cvt import UserError

    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as err:
        raise UserError(f"{path}: not a readable {what} ({err}); delete it to start again") from None
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise UserError(f"{path}: not a {what}; delete it or choose another path")
    return state
