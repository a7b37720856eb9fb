"""The result-producing benchmark scripts: their arithmetic, and a tiny end-to-end run of each on synthetic data."""
import json

import pytest

from conftest import load_script


@pytest.fixture(scope="module")
def efficiency():
    return load_script("search_efficiency")


def test_hypervolume_of_known_fronts(efficiency):
    hv = efficiency.hypervolume
    assert hv([], 10, 4) == 0
    assert hv([(30, 3)], 10, 4) == pytest.approx(20 * 1)
    # Two non-dominated points: a cheap weak one and a costly strong one (an L-shaped area).
    assert hv([(20, 2), (40, 3.5)], 10, 4) == pytest.approx(1.5 * 10 + 0.5 * 30)
    # A dominated point, a point below chance and one over budget add nothing.
    assert hv([(20, 2), (40, 3.5), (15, 3), (5, 1), (90, 4.5)], 10, 4) == pytest.approx(30)
    # Order does not matter.
    assert hv([(40, 3.5), (20, 2)], 10, 4) == hv([(20, 2), (40, 3.5)], 10, 4)


def test_efficiency_and_finetune_scripts_end_to_end(efficiency, tmp_path, capsys):
    out = tmp_path / "eff"
    args = ["--quick", "--data", "synthetic", "--threads", "1", "--seeds", "0", "--samplers", "random", "tpe",
            "--out-dir", str(out)]
    assert efficiency.main(args) == 0
    text = capsys.readouterr().out
    assert "| random | 1 |" in text and "| tpe | 1 |" in text
    saved = json.loads((out / "efficiency.json").read_text())
    for sampler in ("random", "tpe"):
        run = saved["runs"][sampler][0]
        assert len(run["hypervolume"]) == 4  # one point per trained trial
        assert run["hypervolume"] == sorted(run["hypervolume"])  # a front only grows
        assert run["best_accuracy"] == sorted(run["best_accuracy"])
    assert (out / "efficiency.png").stat().st_size > 0
    # A finished run is read back, not searched again.
    stamp = (out / "tpe-seed0" / "trials.csv").stat().st_mtime_ns
    assert efficiency.main(args) == 0
    assert (out / "tpe-seed0" / "trials.csv").stat().st_mtime_ns == stamp

    from nas.export import main as export_main

    assert export_main([str(out / "tpe-seed0"), "--top", "2", "--out", str(tmp_path / "top")]) == 0
    finetune = load_script("finetune_check")
    configs = sorted(str(p) for p in (tmp_path / "top").glob("*.yaml"))
    result = tmp_path / "finetune.json"
    assert finetune.main([str(out / "tpe-seed0"), *configs, "--factor", "2", "--out", str(result)]) == 0
    rows = json.loads(result.read_text())["rows"]
    assert len(rows) == 2
    trials = {r["arch_id"]: float(r["accuracy"])
              for r in efficiency.read_trials(out / "tpe-seed0") if r["status"] == "trained"}
    for row in rows.values():
        # Same recipe, data, seed and threads: the proxy accuracy is the search's, reproduced.
        assert row["proxy"] == pytest.approx(trials[row["arch_id"]])
        assert 0 <= row["long"] <= 100
    assert "Kendall tau (proxy vs 2x longer), 2 architectures" in capsys.readouterr().out


def test_finetune_check_rejects_a_directory_that_is_not_a_run(tmp_path, capsys):
    finetune = load_script("finetune_check")
    from nas.cli import run_main

    assert run_main(finetune.main, [str(tmp_path), "--out", str(tmp_path / "x.json")]) == 2
    assert f"error: {tmp_path} is not a search run directory" in capsys.readouterr().err


def test_proxy_fidelity_shards_merge_into_the_unsharded_result(tmp_path, capsys):
    fidelity = load_script("proxy_fidelity")
    from nas.cli import run_main

    common = ["--quick", "--data", "synthetic", "--space", "cvt13-nas", "--archs", "3", "--threads", "1"]
    whole, parts = tmp_path / "whole.json", [tmp_path / "a.json", tmp_path / "b.json"]
    assert fidelity.main([*common, "--out", str(whole), "--noise-seeds", "1"]) == 0
    for k, part in enumerate(parts):
        assert fidelity.main([*common, "--shard", f"{k}/2", "--out", str(part), "--noise-seeds", "1"]) == 0
    shards = [{r["arch_id"]: r for r in json.loads(p.read_text())["rows"]} for p in parts]
    assert shards[0] and shards[1] and not shards[0].keys() & shards[1].keys()
    capsys.readouterr()
    merged = tmp_path / "merged.json"
    assert fidelity.main([*common, "--merge", *map(str, parts), "--out", str(merged)]) == 0
    assert "merging: " in capsys.readouterr().out
    expected = {r["arch_id"]: r for r in json.loads(whole.read_text())["rows"]}
    got = {r["arch_id"]: r for r in json.loads(merged.read_text())["rows"]}
    assert got.keys() == expected.keys()
    for arch, row in got.items():  # same seeds, one thread: each shard measured what the whole run did
        assert row["values"]["proxy"] == expected[arch]["values"]["proxy"]
        assert row["values"]["long"] == expected[arch]["values"]["long"]
        assert row.get("noise") == expected[arch].get("noise")  # the noise floor, kept from its shard
    noisy = [r for r in got.values() if r.get("noise")]
    assert len(noisy) == 1
    fidelity.print_noise(noisy)  # one architecture alone has no spread across architectures: nan, not a crash
    assert f"| {noisy[0]['arch_id']} | 2 |" in capsys.readouterr().out
    # Files measured with other settings are refused, not mixed in; the shard must be K/N with K < N.
    assert run_main(fidelity.main, [*common, "--long-factor", "2", "--merge", str(parts[0])]) == 2
    assert "long_factor 4 there, 2 here" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        fidelity.main([*common, "--shard", "2/2"])
    assert exit_info.value.code == 2


def test_gpu_suite_smoke_runs_every_part_and_says_what_is_skipped(tmp_path, monkeypatch):
    suite = load_script("gpu_suite")
    monkeypatch.setenv("CVT_NAS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "suite"
    assert suite.main(["--smoke", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    status = {p["part"]: p for p in summary["parts"]}
    assert [status[n]["status"] for n in ("model-speed", "latency", "proxy", "search", "oracle", "supernet")] == \
        ["ok"] * 6
    oracle = json.loads((out / "oracle-gpu-4gflops.json").read_text())
    assert oracle["settings"]["recipe"]["batch_size"] == 256 and oracle["results"]  # the GPU recipe, shards merged
    text = (out / "suite.md").read_text()
    assert "| cvt-nas" not in text and "cvt-nas " in text and "latency table of cvt13-nas" in text
    assert "images/s" in text and "stopped:" in text
    assert {"suite.md", "summary.json", "search-pareto.csv", "search-best.yaml", "oracle-gpu-4gflops.json",
            "supernet-gpu.json"} <= {p.name for p in out.iterdir()}
    supernet = json.loads((out / "supernet-gpu.json").read_text())
    assert supernet["scores"]["results"] and supernet["costs"]["finetune"]["inherited"]
    assert "| supernet (inherited) |" in text and "| inherited |" in text
    assert len(list(out.iterdir())) <= 8  # what a device call brings back


def test_gpu_suite_bad_input(tmp_path, monkeypatch, capsys):
    from nas.cli import run_main

    suite = load_script("gpu_suite")
    # No GPU outside the smoke run: one line saying where to run it.
    assert run_main(suite.main, ["--out", str(tmp_path / "o")]) == 2
    assert "no CUDA device is visible" in capsys.readouterr().err
    assert run_main(suite.main, ["--smoke", "--parts", "nope", "--out", str(tmp_path / "o")]) == 2
    # A missing wheel and missing data name the command that provides them.
    part = suite.Part("x", "x", 1, suite.model_speed, needs=("no_such_module_here",))
    assert "gpu_wheels.sh" in suite._missing(part)
    monkeypatch.setattr(suite, "CARRIED", tmp_path / "nothing")
    monkeypatch.setenv("CVT_NAS_DATA", str(tmp_path / "empty"))
    data, reason = suite._prepare_cifar(smoke=False)
    assert data is None and "gpu_wheels.sh" in reason


def test_contention_benchmark_smoke(tmp_path, capsys):
    bench = load_script("contention")
    out = tmp_path / "contention.json"
    assert bench.main(["--quick", "--policies", "default,nas", "--loads", "0,1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| default | 1 |" in text and "| nas | 0 |" in text
    runs = json.loads(out.read_text())["runs"]
    assert set(runs) == {"default|0", "default|1", "nas|0", "nas|1"}
    assert all(r[0]["wall_s"] > 0 and r[0]["threads"] >= 1 for r in runs.values())
    assert bench.main(["--task", "inference", "--steps", "1", "--rounds", "1", "--loads", "0", "--policies", "nas",
                       "--out", str(out)]) == 0
    assert "Inference of CvT-13" in capsys.readouterr().out
    assert json.loads(out.read_text())["runs"]["nas|0"][0]["images_per_s"] > 0
