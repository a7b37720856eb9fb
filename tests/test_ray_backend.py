"""``python -m nas.search --backend ray`` on a local Ray (2 CPUs, own temp dir, token authentication on).

One Ray cluster is shared by the module (starting one takes 5-15 s); searches run in-process on it, and
the resume test's first driver joins it from a subprocess (``--ray-address``) so it can be killed.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import cvt  # noqa: F401  (torchvision fix before timm)
from cvt import CvTConfig, UserError
from nas.cli import run_main
from nas.ray_cluster import _probe, init_ray
from nas.search import main
from test_search import TINY_PROXY, load_study, read_csv

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    with pytest.MonkeyPatch.context() as mp:
        # Ray's default (token authentication on) with a token of our own, so ~/.ray/auth_token is neither
        # read nor written. RAY_AUTH_MODE stays unset: Ray reads an explicit mode only at import.
        mp.delenv("RAY_AUTH_MODE", raising=False)
        mp.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
        mp.setenv("CVT_NAS_OFFLINE", "1")
        mp.setenv("CVT_NAS_CACHE", str(temp / "cache"))
        cluster = init_ray(num_cpus=2, temp_dir=temp)
        try:
            yield cluster
        finally:
            ray.shutdown()
            shutil.rmtree(temp, ignore_errors=True)



def ray_args(space: str, out: Path, trials: int, *extra: str) -> list[str]:
    return ["--backend", "ray", "--space", space, "--budget", "4.5MFLOPs", "--trials", str(trials), "--out", str(out),
            *TINY_PROXY, *extra]


def cli(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = run_main(main, argv)
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


def tune_trials(out: Path) -> set[int]:
    """Optuna trial numbers that became Tune trials (trial-<number>-<id> directories)."""
    return {int(p.name.split("-")[1]) for p in (out / "ray").glob("tune*/trial-*")}


def wait_for(condition, proc: subprocess.Popen, timeout: float) -> None:
    """Poll ``condition`` until it holds; fail if ``proc`` exits or the time runs out first."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, proc.stderr.read().decode()
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {condition.__name__}")
        time.sleep(0.2)


class DashboardWatcher(threading.Thread):
    """Polls the dashboard API during a search: the jobs (id -> statuses seen) and the trial actors it lists.

    With ``kill=True`` it also SIGKILLs the process of the first trial actor it sees alive (a dying worker).
    """

    def __init__(self, cluster, kill: bool = False):
        super().__init__(daemon=True)
        self.cluster, self.stop, self.jobs, self.actors = cluster, threading.Event(), {}, {}
        self.kill, self.killed = kill, None

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                for job in self.cluster.get_json("/api/jobs/"):
                    self.jobs.setdefault(job["job_id"], set()).add(job["status"])
                data = self.cluster.get_json("/api/v0/actors?detail=1&limit=1000")["data"]["result"]["result"]
                for actor in data:
                    if actor.get("class_name") == "ProxyTrial" and actor.get("repr_name"):
                        self.actors[actor["actor_id"]] = actor["repr_name"]
                        if self.kill and self.killed is None and actor.get("state") == "ALIVE":
                            os.kill(int(actor["pid"]), signal.SIGKILL)
                            self.killed = int(actor["repr_name"].split()[1])
            except OSError:
                pass
            time.sleep(0.5)


# ---------------------------------------------------------------------------- bad input
def test_unreachable_ray_address_is_one_line_exit_2(tmp_path):
    out = tmp_path / "run"
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "nas.search", "--backend", "ray", "--ray-address", "127.0.0.1:1",
                           "--out", str(out), "--data", "synthetic"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO), "CVT_NAS_OFFLINE": "1"})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: --ray-address 127.0.0.1:1: no Ray cluster answers there"), done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()
    assert time.monotonic() - start < 60  # no minutes-long wait inside ray.init


def test_address_probe_rejects_bad_forms_and_non_ray_servers():
    with pytest.raises(UserError, match="give HOST:PORT"):
        _probe("nonsense")
    with socket.socket() as server:  # something that answers, but not gRPC
        server.bind(("127.0.0.1", 0))
        server.listen(1)

        def answer():
            conn, _ = server.accept()
            conn.recv(64)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            conn.close()

        threading.Thread(target=answer, daemon=True).start()
        with pytest.raises(UserError, match="not a Ray head node"):
            _probe(f"127.0.0.1:{server.getsockname()[1]}")


@pytest.mark.parametrize("argv, message", [
    (["--scheduler", "asha", "--objectives", "macs,params"], "objectives macs,params leave out accuracy"),
    (["--scheduler", "asha", "--rungs", "1", "--proxy-epochs", "1"], "--scheduler asha needs at least 2 proxy epochs"),
    (["--scheduler", "asha", "--rungs", "1", "--proxy-steps", "10"], "--scheduler asha decides at epoch boundaries"),
    (["--scheduler", "asha"], "--scheduler asha and promotion (--rungs) both decide"),
    (["--gpus-per-trial", "-1"], "--gpus-per-trial -1.0: expected a number >= 0"),
    (["--cpus-per-trial", "0"], "--cpus-per-trial 0.0: expected a number > 0"),
])
def test_bad_ray_options_are_one_line_exit_2(argv, message, tmp_path, capsys):
    code, err = cli(["--backend", "ray", "--out", str(tmp_path / "run"), *argv], capsys)
    assert code == 2 and err.startswith(f"error: {message}"), err
    assert len(err.strip().splitlines()) == 1


def test_ray_options_need_the_ray_backend(tmp_path, capsys):
    code, err = cli(["--scheduler", "asha", "--gpus-per-trial", "1", "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and err.strip() == "error: --gpus-per-trial, --scheduler only apply with --backend ray"


def test_more_gpus_than_the_cluster_has(ray_cluster, tiny_space, tmp_path, capsys):
    out = tmp_path / "run"
    code, err = cli(ray_args(tiny_space, out, 1, "--gpus-per-trial", "1"), capsys)
    assert code == 2, err
    assert err.strip().splitlines()[-1] == ("error: --gpus-per-trial 1: the Ray cluster's largest node has 0 GPU(s) "
                                            "(none at all); lower it, or join a cluster with GPUs (--ray-address)")
    assert not out.exists()  # checked before the run directory is created


# ---------------------------------------------------------------------------- searches
def test_search_runs_trials_concurrently_survives_a_dead_worker_and_shows_in_the_dashboard(ray_cluster, tiny_space,
                                                                                           tmp_path, capsys):
    import ray

    assert ray_cluster.dashboard_url.startswith("http://127.0.0.1:")
    with pytest.raises(urllib.error.HTTPError) as refused:  # token authentication is on
        urllib.request.urlopen(ray_cluster.dashboard_url + "/api/jobs/", timeout=10)
    assert refused.value.code == 401
    out = tmp_path / "run"
    watcher = DashboardWatcher(ray_cluster, kill=True)
    watcher.start()
    try:
        # Longer trainings (512 images, 3 epochs): the kill lands while the trial runs, even when the
        # dashboard lags a loaded machine by a second or two (256 images and 2 epochs once missed it).
        code, err = cli(ray_args(tiny_space, out, 4, "--workers", "2", "--proxy-epochs", "3",
                                 "--proxy-train-subset", "512"), capsys)
    finally:
        watcher.stop.set()
        watcher.join()
    assert code == 0, err
    assert f"ray dashboard: {ray_cluster.dashboard_url}" in err

    rows = read_csv(out / "trials.csv")
    trained = {int(r["number"]) for r in rows if r["status"] == "trained"}
    over = {int(r["number"]) for r in rows if r["status"] == "over_budget"}
    assert len(trained) == 4 and over, rows  # the 4.5 MMAC budget cuts this space about in half
    assert all(int(r["macs"]) <= 4.5e6 for r in rows if r["status"] == "trained")
    # Only feasible candidates ever became Tune trials (and trial actors): over-budget ones never started.
    assert tune_trials(out) == trained
    seen = {int(text.split()[1]) for text in watcher.actors.values()}
    assert seen and seen <= trained
    # Two at once: the second trial was sampled while the first one was still training.
    study = load_study(out)
    spans = sorted((t.datetime_start, t.datetime_complete) for t in study.trials if t.number in trained)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:]))
    # The trial whose worker was killed was retried (FailureConfig) and trained.
    from ray.tune import ExperimentAnalysis

    failures = {t.config["nas_trial"]: t.num_failures for t in ExperimentAnalysis(str(out / "ray" / "tune")).trials}
    assert failures == {n: int(n == watcher.killed) for n in trained}
    # The search (this process, a driver of the cluster) was listed as a running job.
    assert "RUNNING" in watcher.jobs[ray.get_runtime_context().get_job_id()]
    # Same outputs as the Optuna backend: the front, plots and reference-format exports.
    front = read_csv(out / "pareto.csv")
    assert front and {int(r["number"]) for r in front} <= trained
    assert (out / "pareto.png").exists() and (out / "history.png").exists()
    exports = sorted((out / "exports").rglob("*.yaml"))
    assert exports
    for path in exports:
        assert isinstance(CvTConfig.from_yaml(path), CvTConfig)


class _StopFirstTrial:
    """Makes ASHA stop the first trial that reports an epoch (the rest as ASHA decides)."""

    def __init__(self):
        self.stopped: list[int] = []

    def scheduler(self):
        from ray.tune.schedulers import ASHAScheduler, TrialScheduler

        outer = self

        class Scheduler(ASHAScheduler):
            def on_trial_result(self, tune_controller, trial, result):
                decision = super().on_trial_result(tune_controller, trial, result)
                if not outer.stopped and not result.get("done"):
                    outer.stopped.append(trial.config["nas_trial"])
                    return TrialScheduler.STOP
                return decision

        return Scheduler


def test_trials_stopped_by_asha_are_pruned_and_never_on_the_front(ray_cluster, tiny_space, tmp_path, capsys,
                                                                  monkeypatch):
    stop = _StopFirstTrial()
    monkeypatch.setattr("nas.search._ray_backend.ASHAScheduler", stop.scheduler())
    out = tmp_path / "run"
    code, err = cli(ray_args(tiny_space, out, 3, "--scheduler", "asha", "--proxy-epochs", "2"), capsys)
    assert code == 0, err
    assert len(stop.stopped) == 1
    study = load_study(out)
    pruned = study.trials[stop.stopped[0]]
    assert pruned.state.name == "PRUNED" and pruned.user_attrs["status"] == "pruned"
    assert pruned.user_attrs["epochs"] == 1 and pruned.user_attrs["fidelity"] == "1/2 epochs"
    assert pruned.user_attrs["accuracy"] >= 0  # what it reached is kept, with its fidelity
    trained = [t for t in study.trials if t.user_attrs.get("status") == "trained"]
    assert len(trained) == 2 and all(t.user_attrs["epochs"] == 2 for t in trained)  # pruned counts as a training
    assert pruned.number not in {t.number for t in study.best_trials}
    assert pruned.number not in {int(r["number"]) for r in read_csv(out / "pareto.csv")}
    assert not [p for p in (out / "exports").rglob("*.yaml") if p.stem.endswith(f"t{pruned.number:03d}")]
    row = next(r for r in read_csv(out / "trials.csv") if int(r["number"]) == pruned.number)
    assert row["status"] == "pruned" and row["epochs"] == "1"


def test_promotion_runs_as_tune_trials_and_the_front_holds_only_finished_rungs(ray_cluster, tiny_space, tmp_path,
                                                                               capsys):
    out = tmp_path / "run"
    code, err = cli(ray_args(tiny_space, out, 4, "--rungs", "1,2", "--workers", "2", "--self-check", "0"), capsys)
    assert code == 0, err
    rows = read_csv(out / "trials.csv")
    trained = [r for r in rows if r["status"] == "trained"]
    assert sorted(r["rung"] for r in trained) == ["0"] * 4 + ["1"] * 2
    promoted = [r for r in trained if r["rung"] == "1"]
    assert {r["root"] for r in promoted} < {r["number"] for r in trained if r["rung"] == "0"}
    assert all((out / "checkpoints" / r["arch_id"] / "rung-1.pt").is_file() for r in promoted)
    # Every front row is a finished training; a promoted architecture appears at its rung 1 only.
    front = read_csv(out / "pareto.csv")
    assert {r["status"] for r in front} == {"trained"}
    assert not {r["root"] for r in front if r["rung"] == "0"} & {r["root"] for r in promoted}
    assert front[0]["rung"] == "1"


def test_supernet_scores_and_confirmations_run_as_tune_trials(ray_cluster, tiny_space, tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("steps: 3\nbatch_size: 16\ntrain_subset: 128\npool: 10\n")
    out = tmp_path / "run"
    code, err = cli(ray_args(tiny_space, out, 6, "--estimator", "supernet", "--supernet-recipe", str(recipe),
                             "--rungs", "1,2", "--confirm", "1", "--workers", "2"), capsys)
    assert code == 0, err
    rows = [r for r in read_csv(out / "trials.csv") if r["status"] == "trained"]
    assert sorted((r["rung"], r["screening"]) for r in rows) == [("0", "True")] * 6 + [("1", "False")]
    assert {int(r["number"]) for r in rows} <= tune_trials(out)  # each one a Tune trial
    front = read_csv(out / "pareto.csv")
    assert [r["rung"] for r in front] == ["1"]


def test_resume_after_the_driver_is_killed(ray_cluster, tiny_space, tmp_path, capsys):
    out = tmp_path / "run"
    args = ray_args(tiny_space, out, 4, "--workers", "2", "--proxy-epochs", "2", "--proxy-train-subset", "256")
    cmd = [sys.executable, "-m", "nas.search", *args, "--ray-address", ray_cluster.address]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    journal = out / "study.journal"

    def one_trained_and_a_trial_actor_training() -> bool:
        text = journal.read_text() if journal.exists() else ""
        trained = text.count('"status":"trained"')
        if not trained or text.count('"phase":"training"') <= trained:
            return False
        actors = ray_cluster.get_json("/api/v0/actors?detail=1&limit=1000")["data"]["result"]["result"]
        return any(a.get("class_name") == "ProxyTrial" and a.get("state") == "ALIVE" for a in actors)

    try:
        wait_for(one_trained_and_a_trial_actor_training, proc, timeout=150)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = {t.number: t.values for t in load_study(out).trials
              if t.state.name == "COMPLETE" and t.user_attrs.get("status") == "trained"}
    assert before
    # The killed driver had joined the cluster as a job named by its run directory.
    assert [j for j in ray_cluster.get_json("/api/jobs/")
            if (j.get("metadata") or {}).get("run_dir") == str(out.resolve())]

    code, err = cli(args + ["--resume"], capsys)
    assert code == 0, err
    assert "ray: restoring the Tune experiment" in err
    trials = load_study(out).trials
    for number, values in before.items():  # nothing finished was lost or changed
        assert trials[number].values == values
    assert sum(t.user_attrs.get("status") == "trained" for t in trials) == 4
    # The training the kill cut short was queued again with the same parameters and trained. (A candidate the
    # driver was still sampling when it died is simply sampled anew.)
    cut_short = [t for t in trials if t.user_attrs.get("status") == "interrupted"
                 and t.user_attrs.get("phase") == "training"]
    assert cut_short
    requeued = {t.user_attrs.get("requeue_of"): t for t in trials if "requeue_of" in t.user_attrs}
    for t in cut_short:
        assert requeued[t.number].params == t.params
        assert requeued[t.number].user_attrs["status"] == "trained"
    assert not [t for t in trials if t.state.name == "RUNNING"]
    # One Tune experiment, restored (a second session's state next to the first), holding every training.
    assert [p.name for p in (out / "ray").iterdir() if p.is_dir()] == ["tune"]
    assert len(list((out / "ray" / "tune").glob("experiment_state-*.json"))) == 2
    assert {t.number for t in trials if t.user_attrs.get("status") == "trained"} <= tune_trials(out)
