"""OpenMP's waiting behaviour, chosen before torch loads: fast on a quiet machine, no collapse on a busy one.

torch's Linux CPU wheels run their thread pool on GNU OpenMP (libgomp). Between parallel regions an idle thread
spins for ``GOMP_SPINCOUNT`` iterations (300,000 by default) before it sleeps, which suits the many short regions
of a small proxy training. When another process holds a CPU, that spinning waits for a thread the kernel has
descheduled, and a training next to one busy process runs many times slower; sleeping at once
(``OMP_WAIT_POLICY=PASSIVE``) avoids that but slows every quiet machine. A shorter spin keeps most of both
(figures and the choice: ``docs/performance.md``, "Contention").

libgomp reads its environment once, when torch loads it, so ``nas`` sets this on import, before ``cvt`` imports
torch; child processes (search workers, benchmark subprocesses) inherit it. Other OpenMP runtimes ignore it.
"""
from __future__ import annotations

import os
import sys
from typing import MutableMapping

__all__ = ["SPIN_COUNT", "OPENMP_SETTINGS", "choose_wait_policy"]

SPIN_COUNT = 5_000
OPENMP_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")  # a user's own choice always wins


def choose_wait_policy(environ: MutableMapping[str, str] = os.environ) -> str | None:
    """Set ``GOMP_SPINCOUNT`` unless the user chose a waiting behaviour or torch is loaded already (too late to
    matter); returns the setting made, or None."""
    if "torch" in sys.modules or any(name in environ for name in OPENMP_SETTINGS):
        return None
    environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
    return f"GOMP_SPINCOUNT={SPIN_COUNT}"
