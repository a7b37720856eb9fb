"""Other work on the CPUs: which processes compete with this one, and whether the machine is oversubscribed.

Read from ``/proc`` (Linux) without torch: each process's CPU time is sampled twice, a short interval apart, so
the figure is what it uses now, not since it started. Elsewhere nothing is found and nothing is warned about.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BusyProcess", "busy_processes", "contention_warning", "shared_cpus_warning"]

PROC = Path("/proc")
BUSY = 0.3  # share of one CPU from which a process counts as competing


@dataclass(frozen=True)
class BusyProcess:
    pid: int
    name: str
    cpus: float  # CPUs it used over the sampling interval (1.0 = one core fully)


def _cpu_ticks() -> dict[int, tuple[str, int]]:
    ticks = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone, or not ours to read
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        ticks[int(entry.name)] = (name, int(fields[11]) + int(fields[12]))  # utime + stime
    return ticks


def busy_processes(interval: float = 0.5) -> list[BusyProcess]:
    """Processes other than this one that used at least ``BUSY`` of a CPU over ``interval`` seconds, busiest
    first; empty where ``/proc`` is missing."""
    if not PROC.is_dir():
        return []
    before = _cpu_ticks()
    time.sleep(interval)
    after = _cpu_ticks()
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    busy = []
    for pid, (name, ticks) in after.items():
        if pid == os.getpid() or pid not in before:
            continue
        share = (ticks - before[pid][1]) / hz / interval
        if share >= BUSY:
            busy.append(BusyProcess(pid, name, share))
    return sorted(busy, key=lambda p: -p.cpus)


def contention_warning(cpus: int, threads: int, others: list[BusyProcess]) -> str | None:
    """One line when ``threads`` of ours and the ``others``' load need more than ``cpus``, naming the busiest;
    None when they fit."""
    load = sum(p.cpus for p in others)
    if threads + load <= cpus + 0.5:
        return None
    names = ", ".join(f"{p.name} (pid {p.pid}, {100 * p.cpus:.0f}% of a CPU)" for p in others[:3])
    more = f" and {len(others) - 3} more" if len(others) > 3 else ""
    fit = max(1, round(cpus - load))
    advice = f"--threads {fit} fits what is left" if fit < threads else "nothing smaller fits: expect it to take longer"
    return (f"the CPUs are shared: {names}{more} use about {load:.1f} of the {cpus} CPUs this process may use, "
            f"and training asks for {threads} thread(s); trainings and latency figures will be slower and noisier "
            f"({advice})")


def shared_cpus_warning(threads: int) -> str | None:
    """:func:`contention_warning` for this machine now: the CPUs this process may use, and who is busy on them
    (sampled for half a second)."""
    from ._cpu import available_cpus

    return contention_warning(available_cpus(), threads, busy_processes())
