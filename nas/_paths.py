"""Where cvt-nas keeps files outside a run directory, and how every room writes a file whole or not at all."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

__all__ = ["default_data_root", "default_cache_dir", "atomic_path"]


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
