"""The CPUs a process may use: affinity and cgroup quota, read without torch."""
from __future__ import annotations

import os
import subprocess
import sys
import time

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


def test_contention_warning_on_fixed_figures():
    from nas._contention import BusyProcess, contention_warning

    one = [BusyProcess(41, "python", 0.98)]
    assert contention_warning(2, 1, one) is None  # 1 + 1 fits 2 CPUs
    assert "nothing smaller fits" in contention_warning(1, 1, one)
    line = contention_warning(2, 2, one)
    assert line.startswith("the CPUs are shared: python (pid 41, 98% of a CPU) use about 1.0 of the 2 CPUs")
    assert "(--threads 1 fits what is left)" in line
    many = [BusyProcess(i, f"job{i}", 0.9) for i in range(5)]
    assert "job0 (pid 0, 90% of a CPU), job1" in contention_warning(8, 6, many) and "and 2 more" in \
        contention_warning(8, 6, many)


@pytest.mark.skipif(not __import__("pathlib").Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_a_busy_neighbour_is_found_and_named():
    from nas._contention import busy_processes

    busy = "import time\nend = time.time() + 20\nwhile time.time() < end: pass"
    neighbour = subprocess.Popen([sys.executable, "-c", busy])
    try:
        time.sleep(0.3)
        found = {p.pid: p for p in busy_processes(interval=1.0)}
        assert neighbour.pid in found and found[neighbour.pid].cpus > 0.3
        assert os.getpid() not in found
    finally:
        neighbour.kill()
        neighbour.wait()


@pytest.mark.parametrize("prelude, env, expected", [
    ("", {}, "10000 None"),  # nas chose, before torch loaded
    ("", {"OMP_WAIT_POLICY": "PASSIVE"}, "None PASSIVE"),  # the user's own choice wins
    ("", {"GOMP_SPINCOUNT": "42"}, "42 None"),
    ("import torch; ", {}, "None None"),  # torch loaded first: too late to matter, so nothing is set
])
def test_the_openmp_policy_is_set_before_torch_loads_and_a_users_setting_wins(prelude, env, expected):
    from nas._openmp import SPIN_COUNT, OPENMP_SETTINGS

    code = (f"{prelude}import os, nas, torch; "
            "print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))")
    clean = {k: v for k, v in os.environ.items() if k not in OPENMP_SETTINGS}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True,
                         env={**clean, **env}).stdout
    assert out.split() == expected.replace("10000", str(SPIN_COUNT)).split()

