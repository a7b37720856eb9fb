"""End-to-end tests of ``python -m nas.search`` on CPU with the synthetic dataset and tiny proxy settings."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import cvt  # noqa: F401  (torchvision fix before timm)
import optuna
from cvt import CvTConfig, UserError
from nas.cli import run_main
from nas.cost import analytic_macs
from nas.search import SearchConfig, main, run_search
from nas.search._options import parse_config
from nas.search._trials import stop_reason
from nas.search._rundir import DeviceLock, RunDir

from conftest import TINY_SPACE


REPO = Path(__file__).resolve().parents[1]
TINY_TRAINING = ["--data", "synthetic", "--proxy-epochs", "1", "--proxy-train-subset", "64", "--proxy-val-subset",
                 "32", "--proxy-batch-size", "32", "--threads", "1"]
TINY_PROXY = TINY_TRAINING + ["--rungs", "1", "--self-check", "0"]  # promotion, self-check: test_promotion.py


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("CVT_NAS_CACHE", str(tmp_path / "cache"))  # latency and data caches
    monkeypatch.setenv("CVT_NAS_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)



def tiny_args(space: str, out: Path, trials: int = 3, *extra: str) -> list[str]:
    return ["--space", space, "--budget", "4.5MFLOPs", "--trials", str(trials), "--out", str(out), *TINY_PROXY,
            *extra]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def load_study(run_dir: Path) -> optuna.Study:
    name = json.loads((run_dir / "run.json").read_text())["study_name"]
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(run_dir / "study.journal")))
    return optuna.load_study(study_name=name, storage=storage)


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run the CLI in-process; usage errors from argparse exit through SystemExit."""
    try:
        code = run_main(main, argv)
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def search_command(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that run ``python -m nas.search ARGS`` in a process of its own."""
    return [sys.executable, "-m", "nas.search", *args], {**os.environ, "PYTHONPATH": str(REPO)}


def snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------- the main job
def test_search_cvt13_nas_within_budget_and_exports_load(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, stderr = cli(["--space", "cvt13-nas", "--budget", "4GFLOPs", "--trials", "4", "--out", str(out),
                                *TINY_TRAINING], capsys)
    assert code == 0, stderr
    assert "optuna-dashboard" in stderr and "224x224" in stderr and "32x32" in stderr
    rows = read_csv(out / "trials.csv")
    trained = [r for r in rows if r["status"] == "trained"]
    over = [r for r in rows if r["status"] == "over_budget"]
    # The default promotion: 4 candidates at the first rung, the best 2 at the second, the best of those at the top.
    assert sorted(r["rung"] for r in trained) == ["0"] * 4 + ["1"] * 2 + ["2"]
    promoted = next(r for r in trained if r["rung"] == "2")
    assert promoted["root"] in {r["root"] for r in trained if r["rung"] == "1"}
    # A self-check of 4 candidates would add more than half the run's compute: off by default, and said so.
    assert "self-check: off" in stderr and "self_check" not in json.loads((out / "run.json").read_text())
    for r in trained:  # every trained candidate is within budget, and its costs are right
        assert int(r["macs"]) <= 4e9 and r["feasible"] == "True" and 0.0 <= float(r["accuracy"]) <= 100.0
        config = CvTConfig.from_dict(json.loads(r["model_config"]))
        assert analytic_macs(config, 224) == int(r["macs"])
    for r in over:  # over-budget candidates were never trained
        assert int(r["macs"]) > 4e9 and r["accuracy"] == "" and r["train_wall_s"] == ""
    assert "feasible fraction" in stdout
    study = load_study(out)
    assert all(t.constraints for t in study.trials)  # the sampler saw every budget decision
    assert {"pareto.csv", "pareto.png", "history.png", "run.json"} <= {p.name for p in out.iterdir()}
    front = read_csv(out / "pareto.csv")
    assert front and {r["number"] for r in front} <= {r["number"] for r in trained}
    exports = sorted((out / "exports" / "pareto").glob("cvt-13-nas-4gflops-t*.yaml"))
    assert len(exports) == len(front)
    import timm
    import torch

    for path in exports:
        config = CvTConfig.from_yaml(path)
        number = int(path.stem.rsplit("-t", 1)[1])
        row = next(r for r in rows if int(r["number"]) == number)
        assert config.arch_id() == row["arch_id"] and analytic_macs(config, 224) <= 4e9
        model = timm.create_model("cvt_13", config=str(path), num_classes=4).eval()
        with torch.no_grad():
            assert model(torch.randn(1, 3, 64, 64)).shape == (1, 4)
    best = list((out / "exports" / "best").glob("*.yaml"))
    assert len(best) == 1 and best[0].name in {p.name for p in exports}
    assert best[0].stem.endswith(f"t{int(promoted['number']):03d}")  # the highest rung decides
    assert "fidelity: rung 2 of 0-2, 4x the proxy budget" in best[0].read_text()


def test_recipe_keys_mirror_options_and_command_line_wins(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("space: cvt13-nas\nbudget: 4GFLOPs\ntrials: 40\nproxy-epochs: 3\nobjectives: [accuracy, params]\n"
                      "latency_budget: 2.5ms\n")
    config = parse_config(["--config", str(recipe), "--trials", "5"])
    assert (config.space.space, config.space.budget, config.sampling.trials, config.training.proxy["epochs"]) == \
        ("cvt13-nas", "4GFLOPs", 5, 3)
    assert config.space.objective_names == ("accuracy", "params") and config.space.latency_budget == "2.5ms"
    assert config.run_dir == Path("runs/cvt-13-nas-4gflops-2.5ms")
    recipe.write_text("budget: 4GFLOPs\ntrails: 3\n")
    with pytest.raises(UserError, match="unknown key 'trails'"):
        parse_config(["--config", str(recipe)])


def test_every_shipped_recipe_parses():
    recipes = sorted((REPO / "experiments" / "search").glob("*.yaml"))
    assert len(recipes) >= 3
    for recipe in recipes:
        config = parse_config(["--config", str(recipe)])
        assert config.space.budgets, recipe


# ---------------------------------------------------------------------------- reliability
def test_failed_trial_is_recorded_and_search_goes_on(tmp_path, tiny_space, monkeypatch, capsys):
    import nas.proxy

    real, calls = nas.proxy.train_rung, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if len(calls) == 3:
            raise nas.proxy.TrainingFailed("loss became nan at epoch 1, step 3", kind="diverged", epoch=1, step=3)
        return real(*args, **kwargs)

    monkeypatch.setattr(nas.proxy, "train_rung", flaky)
    out = tmp_path / "run"
    code, _, stderr = cli(tiny_args(tiny_space, out, 4), capsys)
    assert code == 0, stderr
    rows = read_csv(out / "trials.csv")
    failed = [r for r in rows if r["status"] == "failed"]
    assert [r["failure"] for r in failed] == ["out of memory: CUDA out of memory. Tried to allocate 2.00 GiB",
                                              "loss became nan at epoch 1, step 3"]
    assert all(r["state"] == "FAIL" for r in failed)
    assert sum(r["status"] == "trained" for r in rows) == 2  # 4 trainings asked: 2 failed, 2 trained


def test_real_divergence_is_a_failed_trial(tmp_path, tiny_space, capsys):
    out = tmp_path / "run"
    code, _, stderr = cli(tiny_args(tiny_space, out, 2, "--proxy-lr", "1e30", "--proxy-warmup-epochs", "0"), capsys)
    assert code == 1 and "no candidate was trained successfully" in stderr
    rows = [r for r in read_csv(out / "trials.csv") if r["status"] != "over_budget"]
    assert len(rows) == 2 and all(r["status"] == "failed" and r["failure"] for r in rows)


def test_same_seed_same_trials(tmp_path, tiny_space):
    def run(name: str, seed: int) -> list[tuple]:
        run_search(parse_config(tiny_args(tiny_space, tmp_path / name, 2, "--seed", str(seed))))
        rows = read_csv(tmp_path / name / "trials.csv")
        return [(r["number"], r["status"], r["arch_id"], r["accuracy"]) for r in rows]

    first = run("a", 7)
    assert first == run("b", 7)
    assert first != run("c", 8)


def test_guard_stops_a_search_that_only_samples_over_budget(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, stderr = cli(["--space", "cvt13-nas", "--budget", "3.125GFLOPs", "--trials", "3", "--out", str(out),
                                "--max-untrained", "6", "--sampler", "random", *TINY_PROXY], capsys)
    assert "guard: 6 samples trained nothing" in stdout
    rows = read_csv(out / "trials.csv")
    assert len(rows) == 6 and all(r["status"] == "over_budget" for r in rows)
    assert "feasible fraction 0%" in stdout and code == 1


def test_two_workers_share_the_study(tmp_path, tiny_space):
    out = tmp_path / "run"
    result = run_search(parse_config(tiny_args(tiny_space, out, 4, "--workers", "2", "--threads", "2")))
    rows = read_csv(out / "trials.csv")
    assert sum(r["status"] == "trained" for r in rows) == 4  # exactly --trials trainings, however many workers
    # Which worker trains what depends on process start-up times; both record into the one study.
    assert {r["worker"] for r in rows} <= {"0", "1"}
    assert {r["state"] for r in rows if r["status"] != "over_budget"} == {"COMPLETE"}
    assert {r["state"] for r in rows if r["status"] == "over_budget"} <= {"PRUNED"}  # off the dashboards' plots
    assert result.best is not None and result.exports


def test_workers_never_start_more_trainings_than_asked():
    config = SearchConfig.create(budget="4G", trials=4, max_untrained=50)
    counts = dict(trainings=2, running=1, untrained=0)
    assert stop_reason(config, counts, None) is None  # a free slot
    assert stop_reason(config, {**counts, "running": 2}, None) == "wait"  # in-flight trials may take the rest
    assert stop_reason(config, {**counts, "trainings": 4}, None) == "4 proxy trainings done"
    assert stop_reason(config, {**counts, "untrained": 50}, None).startswith("guard: 50 samples")
    assert stop_reason(config, counts, time.time() - 1) == "timeout reached"


def test_resume_after_kill_loses_and_duplicates_nothing(tmp_path, tiny_space):
    out = tmp_path / "run"
    # Two epochs on more images, so the search is killed in the middle of a training.
    args = tiny_args(tiny_space, out, 3) + ["--proxy-epochs", "2", "--proxy-train-subset", "256"]
    cmd, env = search_command(args)
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    journal = out / "study.journal"
    deadline = time.time() + 120
    try:
        while time.time() < deadline:  # at least one finished training, and another one under way
            text = journal.read_text() if journal.exists() else ""
            trained = text.count('"status":"trained"')
            if trained >= 1 and text.count('"phase":"training"') > trained:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.05)
        else:
            pytest.fail("the search never reached a second training")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = {t.number: t.values for t in load_study(out).trials if t.user_attrs.get("status") == "trained"
              and t.state.name == "COMPLETE"}
    assert before
    done = subprocess.run(cmd + ["--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    trials = load_study(out).trials
    after = {t.number: t.values for t in trials if t.user_attrs.get("status") == "trained"}
    assert all(after[n] == v for n, v in before.items())  # nothing finished was lost or changed
    assert len(after) == 3  # exactly the trainings asked for: nothing ran twice
    interrupted = [t for t in trials if t.user_attrs.get("status") == "interrupted"]
    assert interrupted and all(t.state.name == "FAIL" for t in interrupted)
    requeued = {t.user_attrs.get("requeue_of"): t for t in trials if "requeue_of" in t.user_attrs}
    for t in interrupted:  # the killed candidate was trained after all, with the same parameters
        assert t.number in requeued and requeued[t.number].params == t.params
    arch_ids = [t.user_attrs["arch_id"] for t in trials if t.user_attrs.get("status") == "trained"]
    assert len(arch_ids) == len(set(arch_ids))
    assert not [t for t in trials if t.state.name == "RUNNING"]


def _workers(pid: int) -> list[int]:
    """The worker processes of a search (its spawned children, not multiprocessing's resource tracker)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the worker processes through /proc (Linux)")
def test_a_killed_worker_is_replaced_and_its_trial_queued_again(tmp_path, tiny_space):
    out = tmp_path / "run"
    args = tiny_args(tiny_space, out, 4, "--workers", "2", "--threads", "2", "--proxy-epochs", "3",
                     "--proxy-train-subset", "256")
    cmd, env = search_command(args)
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    journal = out / "study.journal"
    deadline = time.time() + 120
    try:
        # A worker in the middle of a training: kill -9 it, as the OOM killer would. Which worker trains is not
        # visible from outside, and the other may be between candidates, so both go: each slot is replaced.
        while time.time() < deadline:
            text = journal.read_text() if journal.exists() else ""
            workers = _workers(proc.pid)
            if text.count('"phase":"training"') > text.count('"status":"trained"') and len(workers) == 2:
                for pid in workers:
                    os.kill(pid, signal.SIGKILL)
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.05)
        else:
            pytest.fail("no worker reached a training")
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr.decode()
    assert "died" in stderr.decode()
    trials = load_study(out).trials
    assert sum(t.user_attrs.get("status") == "trained" for t in trials) == 4  # the search finished, no hang
    interrupted = [t for t in trials if t.user_attrs.get("status") == "interrupted"]
    requeued = {t.user_attrs.get("requeue_of") for t in trials}
    # Every fully sampled one is queued again; one killed while sampling (the idle worker may be) has no complete
    # parameters to replay and is simply sampled anew.
    assert any(t.user_attrs.get("phase") == "training" for t in interrupted)
    assert all(t.number in requeued for t in interrupted if t.user_attrs.get("phase"))
    assert not [t for t in trials if t.state.name == "RUNNING"]


# ---------------------------------------------------------------------------- latency
def test_latency_budget_measures_before_training(tmp_path, tiny_space, capsys):
    out = tmp_path / "run"
    # A budget no tiny model misses even on a busy machine: this checks the measurement path, not timing.
    code, _, stderr = cli(["--space", tiny_space, "--latency-budget", "10s", "--trials", "2", "--out", str(out),
                           "--device", "cpu", "--latency-threads", "1", *TINY_PROXY], capsys)
    assert code == 0, stderr
    rows = [r for r in read_csv(out / "trials.csv") if r["status"] == "trained"]
    assert len(rows) == 2
    for r in rows:
        assert 0 < float(r["latency_ms"]) <= 10_000 and r["latency_device"] and r["feasible"] == "True"
    front = read_csv(out / "pareto.csv")
    assert front and all(r["latency_ms"] for r in front)
    study = load_study(out)
    assert study.metric_names == ["accuracy", "latency"]  # default objectives with a latency budget


def test_measurement_waits_for_training_to_reach_an_epoch_boundary(tmp_path):
    trainer, measurer = DeviceLock(tmp_path, "cpu"), DeviceLock(tmp_path, "cpu")
    events: list[str] = []
    measured = threading.Event()

    def measure():
        with measurer.exclusive():
            events.append("measure")
        measured.set()

    with trainer.shared():
        thread = threading.Thread(target=measure)
        thread.start()
        time.sleep(0.3)
        events.append("epoch 1 done")  # the measurement cannot start in the middle of an epoch
        assert not measured.is_set()
        trainer.epoch_boundary()  # lets the pending measurement run, then resumes training
        events.append("epoch 2")
    thread.join(5)
    assert events == ["epoch 1 done", "measure", "epoch 2"]


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("argv, message", [
    (["--budget", "4GFLOPz"], "4GFLOPz"),
    (["--budget=-1G"], "must be positive"),
    (["--space", "nope", "--budget", "4GFLOPs"], "unknown search space 'nope'"),
    (["--sampler", "cmaes", "--budget", "4G"], "invalid choice: 'cmaes'"),
    (["--objectives", "accuracy,flops", "--budget", "4G"], "unknown objective 'flops'"),
    (["--latency-budget", "2ms", "--device", "tpu"], "device 'tpu' is not understood"),
    (["--latency-budget", "2ms", "--device", "cuda:99"], "is not available"),
    (["--space", "cvt13-nas", "--budget", "2GFLOPs"],
     "no architecture in space cvt13-nas has <= 2.00 GMACs at 224x224; the smallest has 3.12 GMACs"),
    (["--space", "cvt13-nas", "--budget", "4G", "--data", "imagefolder:/no/such/folder"], "/no/such/folder"),
    (["--space", str(TINY_SPACE), "--latency-budget", "1us", "--latency-threads", "1"],
     "no architecture in space tiny has a latency <= "),
    (["--budget", "4G", "--trials", "0"], "--trials = 0"),
    (["--budget", "4G", "--timeout", "soon"], "timeout 'soon'"),
    (["--budget", "-1G"], "budget '-1G' must be positive"),
    (["--budget", "4G", "--proxy-lr", "-1"], "proxy lr = -1.0"),
    (["--space", str(REPO / "experiments"), "--budget", "4G"], "is a folder; give a space YAML file"),
    (["--budget", "4G", "--train-device", "cuda:7"], "use --train-device cpu"),
    (["--budget", "4G", "--out", "{file}/run"], "is a file, not a folder"),
])
def test_bad_input_is_one_line_exit_2_and_creates_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    (tmp_path / "file").write_text("")
    argv = [a.replace("{file}", str(tmp_path / "file")) for a in argv]
    code, _, stderr = cli([*TINY_PROXY, "--out", str(out), *argv], capsys)
    assert code == 2
    assert stderr.startswith("error: ") and stderr.count("\n") == 1 and "Traceback" not in stderr
    assert message in stderr
    assert not out.exists()


def test_existing_directory_needs_resume_and_is_left_intact(tmp_path, tiny_space, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, stderr = cli(tiny_args(tiny_space, out), capsys)
    assert code == 2 and "add --resume" in stderr and snapshot(out) == {"notes.txt": b"mine"}
    code, _, stderr = cli(tiny_args(tiny_space, out) + ["--resume"], capsys)  # foreign directory
    assert code == 2 and "not a cvt-nas run directory" in stderr and snapshot(out) == {"notes.txt": b"mine"}
    code, _, stderr = cli(tiny_args(tiny_space, tmp_path / "missing") + ["--resume"], capsys)
    assert code == 2 and "does not exist" in stderr


def test_corrupt_run_directory_on_resume_is_left_intact(tmp_path, tiny_space, capsys):
    out = tmp_path / "run"
    assert cli(tiny_args(tiny_space, out, 1), capsys)[0] == 0
    journal = out / "study.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:3]) + b"{not json\n" + b"".join(lines[3:]))
    before = snapshot(out)
    code, _, stderr = cli(tiny_args(tiny_space, out, 2) + ["--resume"], capsys)
    assert code == 2 and "is corrupt at line 4" in stderr
    assert snapshot(out) == before
    (out / "run.json").write_text("{")
    before = snapshot(out)
    code, _, stderr = cli(tiny_args(tiny_space, out, 2) + ["--resume"], capsys)
    assert code == 2 and "run.json is corrupt" in stderr and snapshot(out) == before


def test_resume_refuses_different_settings(tmp_path, tiny_space, capsys):
    out = tmp_path / "run"
    assert cli(tiny_args(tiny_space, out, 1), capsys)[0] == 0
    before = snapshot(out)
    code, _, stderr = cli(tiny_args(tiny_space, out, 1, "--seed", "3") + ["--resume"], capsys)
    assert code == 2 and "seed: 0 (run) vs 3 (now)" in stderr and snapshot(out) == before
    other = RunDir(out)
    other.lock()  # another search holds the directory
    try:
        code, _, stderr = cli(tiny_args(tiny_space, out, 2) + ["--resume"], capsys)
        assert code == 2 and "in use by a running search" in stderr and snapshot(out) == before
    finally:
        other.unlock()
    # More trials is a continuation, not a different search.
    code, stdout, stderr = cli(tiny_args(tiny_space, out, 2) + ["--resume"], capsys)
    assert code == 0, stderr
    assert sum(r["status"] == "trained" for r in read_csv(out / "trials.csv")) == 2


def test_search_config_validation():
    assert SearchConfig.create(budget="4GFLOPs").space.objective_names == ("accuracy", "macs")
    assert SearchConfig.create(latency_budget="3ms").space.objective_names == ("accuracy", "latency")
    assert SearchConfig.create(budget="4G", objectives="macs,accuracy").space.objective_names == ("accuracy", "macs")
    assert SearchConfig.create(budget="4G", timeout="1.5h").sampling.timeout == 5400
    with pytest.raises(UserError, match="leave out accuracy"):
        SearchConfig.create(objectives=("macs",))
    with pytest.raises(UserError, match="needs --latency-predictor"):
        SearchConfig.create(latency_budget="2ms", latency="predicted")
    with pytest.raises(UserError, match="unknown proxy setting 'epoch'"):
        SearchConfig.create(proxy={"epoch": 1})
    config = SearchConfig.create(space="cvt13-nas", budget="4GFLOPs")
    assert SearchConfig.from_dict(config.to_dict()) == config
    assert config.differences(config.replace(trials=99, workers=4)) == []
    assert config.differences(config.replace(budget="5G")) == ["budget"]
    # The same meaning written differently is the same search.
    assert config.differences(config.replace(budget="4G", objectives="accuracy,macs")) == []
    # run.json layouts: 1 (one flat mapping, before the settings groups) still reads; an unknown one is refused.
    assert SearchConfig.from_dict(config.flat()) == config
    with pytest.raises(UserError, match="layout 99"):
        SearchConfig.from_dict({**config.to_dict(), "layout": 99})
    with pytest.raises(UserError, match="unknown search setting"):
        SearchConfig.from_dict({**config.flat(), "trails": 3})


def test_every_option_is_one_settings_field_with_its_default_in_the_help():
    from dataclasses import fields

    from nas.proxy import ProxyConfig
    from nas.search._config import option_fields
    from nas.search._options import build_parser

    actions = {a.dest: a for a in build_parser()._actions}
    for name, (_, f) in option_fields().items():
        if name == "proxy":
            continue
        assert name in actions, name
        if f.default not in (None, (), False):
            shown = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
            assert f"(default {shown})" in actions[name].help, name
    exposed = [f.name for f in fields(ProxyConfig) if f.metadata.get("option")]
    assert {f"proxy_{n}" for n in exposed} <= set(actions) and "proxy_seed" not in actions
    assert "(default 2;" in actions["proxy_epochs"].help and "(default 0.1)" in actions["proxy_label_smoothing"].help


def test_an_older_run_directory_resumes(tmp_path, tiny_space, capsys):
    out = tmp_path / "run"
    code, _, stderr = cli(tiny_args(tiny_space, out, 1), capsys)
    assert code == 0, stderr
    manifest = json.loads((out / "run.json").read_text())
    manifest["config"] = SearchConfig.from_dict(manifest["config"]).flat()  # as cvt-nas wrote it before the groups
    (out / "run.json").write_text(json.dumps(manifest))
    code, _, stderr = cli(tiny_args(tiny_space, out, 2) + ["--resume"], capsys)
    assert code == 0, stderr
    assert sum(r["status"] == "trained" for r in read_csv(out / "trials.csv")) == 2


def test_training_free_estimator_ranks_without_training(tmp_path, tiny_space, capsys):
    from nas.data import load_dataset
    from nas.proxy import ProxyConfig, zero_cost

    out = tmp_path / "run"
    code, stdout, stderr = cli(tiny_args(tiny_space, out, 3, "--estimator", "naswot"), capsys)
    assert code == 0, stderr
    assert "estimator naswot" in stderr
    rows = [r for r in read_csv(out / "trials.csv") if r["status"] == "trained"]
    assert len(rows) == 3 and all(r["epochs"] == "0" for r in rows)
    settings = ProxyConfig(epochs=1, train_subset=64, val_subset=32, batch_size=32, threads=1, device="cpu")
    config = CvTConfig.from_dict(json.loads(rows[0]["model_config"]))
    assert float(rows[0]["accuracy"]) == pytest.approx(
        zero_cost.score("naswot", config, load_dataset("synthetic"), settings))
    assert (out / "exports" / "best").is_dir()


def test_a_registered_estimator_plugs_in_without_touching_the_backends(tmp_path, tiny_space, monkeypatch):
    from nas.cost import analytic_params
    from nas.estimators import ESTIMATORS, AccuracyEstimator
    from nas.proxy import ProxyResult

    class Smallest(AccuracyEstimator):  # ranks by fewer parameters: a size prior, as a stand-in estimator
        def estimate(self, model_config, dataset, report=None):
            value = -analytic_params(model_config, num_classes=dataset.num_classes) / 1e3
            return ProxyResult(value, value, 0, 0, [], False, 0.0, float("nan"), 0, "cpu", 1)

    monkeypatch.setitem(ESTIMATORS, "smallest", Smallest)
    out = tmp_path / "run"
    result = run_search(parse_config(tiny_args(tiny_space, out, 3, "--estimator", "smallest")))
    rows = [r for r in read_csv(out / "trials.csv") if r["status"] == "trained"]
    assert len(rows) == 3
    for r in rows:
        config = CvTConfig.from_dict(json.loads(r["model_config"]))
        assert float(r["accuracy"]) == pytest.approx(-analytic_params(config, num_classes=4) / 1e3)
    assert result.best["accuracy"] == max(float(r["accuracy"]) for r in rows)


@pytest.mark.parametrize("extra, message", [
    (["--estimator", "oracle"], "unknown estimator 'oracle'; use one of proxy, naswot"),
    (["--estimator", "synflow", "--backend", "ray", "--scheduler", "asha", "--proxy-epochs", "2"],
     "--estimator synflow reports no epochs"),
])
def test_bad_estimator_settings_are_one_line_and_create_nothing(tmp_path, tiny_space, capsys, extra, message):
    out = tmp_path / "run"
    code, _, stderr = cli(tiny_args(tiny_space, out, 2, *extra), capsys)
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_resume_keeps_only_the_current_front_in_the_run_exports(tmp_path, tiny_space, capsys):
    out = tmp_path / "run"
    assert cli(tiny_args(tiny_space, out, 1), capsys)[0] == 0
    pareto = out / "exports" / "pareto"
    slug = next(pareto.glob("*.yaml")).name.rsplit("-t", 1)[0]
    stale, mine = pareto / f"{slug}-t999.yaml", pareto / "my-notes.txt"
    stale.write_text("# an architecture that left the front\n")
    mine.write_text("not an export\n")
    assert cli(tiny_args(tiny_space, out, 2) + ["--resume"], capsys)[0] == 0
    front = {f"{slug}-t{int(r['number']):03d}.yaml" for r in read_csv(out / "pareto.csv")}
    assert {p.name for p in pareto.glob("*.yaml")} == front
    assert not stale.exists() and mine.exists()


def test_a_full_disk_is_one_line_and_keeps_the_previous_outputs(tmp_path, tiny_space, capsys, monkeypatch):
    import builtins
    import errno

    from nas.search import _outputs

    out = tmp_path / "run"
    assert cli(tiny_args(tiny_space, out, 1), capsys)[0] == 0
    before = (out / "trials.csv").read_bytes()

    def full(path, *args, **kwargs):
        if str(path).endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(_outputs, "open", full, raising=False)
    code, _, stderr = cli(tiny_args(tiny_space, out, 2) + ["--resume"], capsys)
    assert code == 2 and "No space left on device" in stderr and "--resume" in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in stderr and stderr.strip().splitlines()[-1] == errors[0]
    assert (out / "trials.csv").read_bytes() == before and not list(out.glob("*.tmp"))
    monkeypatch.undo()
    assert cli(tiny_args(tiny_space, out, 2) + ["--resume"], capsys)[0] == 0  # space again: outputs written
    assert sum(r["status"] == "trained" for r in read_csv(out / "trials.csv")) == 2


@pytest.mark.parametrize("damage, message", [
    ("cut", "the journal is damaged"),
    ("cut inside a record", "the journal is damaged"),
    ("delete", "has no study journal"),
])
def test_a_damaged_or_missing_journal_is_refused_and_nothing_is_rewritten(tmp_path, tiny_space, capsys, damage,
                                                                          message):
    out = tmp_path / "run"
    assert cli(tiny_args(tiny_space, out, 3), capsys)[0] == 0
    journal = out / "study.journal"
    if damage == "cut":  # cut in the middle, on a record boundary: every line left is valid
        lines = journal.read_bytes().splitlines(keepends=True)
        journal.write_bytes(b"".join(lines[: len(lines) // 3]))
    elif damage == "cut inside a record":  # looks like a kill's torn last record, but trials are missing
        data = journal.read_bytes()
        journal.write_bytes(data[: len(data) // 3])
    else:
        journal.unlink()
    before = snapshot(out)
    code, _, stderr = cli(tiny_args(tiny_space, out, 4) + ["--resume"], capsys)
    assert code == 2 and message in stderr and "Traceback" not in stderr
    assert snapshot(out) == before


def test_an_unusable_storage_is_one_line_and_leaves_no_run_directory(tmp_path, tiny_space, capsys):
    out = tmp_path / "run"
    storage = f"sqlite:///{tmp_path / 'no' / 'such' / 'folder' / 'study.db'}"
    code, _, stderr = cli(tiny_args(tiny_space, out, 1, "--storage", storage), capsys)
    assert code == 2 and "cannot use the study storage" in stderr and "Traceback" not in stderr
    assert not out.exists()
    # A directory a search was killed in before it started (lock, empty journal, no run.json) starts afresh.
    out.mkdir()
    (out / ".run.lock").touch()
    (out / "study.journal").touch()
    code, _, stderr = cli(tiny_args(tiny_space, out, 1), capsys)
    assert code == 0, stderr
    assert (out / "run.json").is_file() and len(read_csv(out / "trials.csv")) >= 1


@pytest.mark.parametrize("when", ["run directory made", "journal made", "run.json written"])
def test_a_search_killed_during_start_up_starts_again_or_resumes(tmp_path, tiny_space, when):
    out = tmp_path / "run"
    cmd, env = search_command(tiny_args(tiny_space, out, 1))
    marker = {"run directory made": out, "journal made": out / "study.journal", "run.json written": out / "run.json"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not marker[when].exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    proc.kill()
    proc.wait()
    fresh = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    if fresh.returncode != 0:  # a run that had started: it says to resume, and resuming works
        assert "--resume" in fresh.stderr, fresh.stderr
        resumed = subprocess.run(cmd + ["--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr
    assert sum(r["status"] == "trained" for r in read_csv(out / "trials.csv")) == 1
