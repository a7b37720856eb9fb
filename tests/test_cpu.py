"""The CPUs a process may use: affinity and cgroup quota, read without torch."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT
from nas.devices import available_cpus
from nas._cpu import cgroup_cpu_limit


@pytest.mark.parametrize("files, limit", [
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu.max": "150000 100000\n"}, 1.5),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2.0),
    ({}, None),
])
def test_cgroup_quota_v1_and_v2(tmp_path, files, limit):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_cpu_limit(tmp_path) == limit


@pytest.mark.skipif(not hasattr(__import__("os"), "sched_setaffinity"), reason="affinity masks are Linux-only")
def test_the_thread_default_respects_an_affinity_mask():
    code = ("import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
            "from nas.devices import available_cpus; "
            "from nas.search import SearchConfig; from nas.search._objective import Evaluator; "
            "print(available_cpus(), Evaluator(SearchConfig.create(), '.').threads)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.split() == ["1", "1"]
    assert available_cpus() >= 1
