"""Where cvt-nas keeps files outside a run directory (every room reads these, none owns them)."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_data_root", "default_cache_dir"]


def default_data_root() -> Path:
    """Where datasets are looked for (and CIFAR-10 downloaded): ``$CVT_NAS_DATA`` or ``~/.cache/cvt-nas/data``."""
    env = os.environ.get("CVT_NAS_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cvt-nas" / "data"


def default_cache_dir() -> Path:
    """Caches (decoded image folders, latency measurements): ``$CVT_NAS_CACHE`` or ``~/.cache/cvt-nas``."""
    env = os.environ.get("CVT_NAS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cvt-nas"
