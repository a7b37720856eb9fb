"""nas.ranking: the fidelity metrics on fixed numbers, the oracle's band sampling, and its store
(refuses other settings, resumes without retraining, merges shards), through the benchmark's command."""
import json
import math

import pytest

import cvt
from cvt import UserError
from nas.cli import run_main
from nas.cost import analytic_macs, shrink_to_fit
from nas.data import load_dataset
from nas.ranking import (OracleSpec, OracleStore, jobs, kendall_tau, reference_architectures, regret, shard_jobs,
                         top_k_hit)

from conftest import load_script

NAN = float("nan")


@pytest.fixture(scope="module")
def oracle_script():
    return load_script("ranking_oracle")


# ------------------------------------------------------------------ metrics
def test_kendall_tau_on_fixed_numbers():
    truth = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}
    assert kendall_tau({"a": 10, "b": 20, "c": 30, "d": 40}, truth) == (pytest.approx(1.0), 4)
    assert kendall_tau({"a": 40, "b": 30, "c": 20, "d": 10}, truth) == (pytest.approx(-1.0), 4)
    # One discordant pair of six: (5 - 1) / 6.
    assert kendall_tau({"a": 1, "b": 3, "c": 2, "d": 4}, truth)[0] == pytest.approx(4 / 6)
    # NaN and missing ids are left out; fewer than three pairs give NaN.
    assert kendall_tau({"a": 1, "b": 2, "c": NAN, "e": 5}, truth)[1] == 2
    assert math.isnan(kendall_tau({"a": 1, "b": 2, "c": NAN}, truth)[0])


def test_regret_and_top_k_hit_on_fixed_numbers():
    truth = {"a": 60.0, "b": 62.5, "c": 61.0, "d": 58.0}
    estimate = {"a": 0.9, "b": 0.5, "c": 0.7, "d": 0.1}  # top-1 is a; the best (b) is third
    assert regret(estimate, truth) == pytest.approx(2.5)
    assert top_k_hit(estimate, truth, k=3) is True
    assert top_k_hit(estimate, truth, k=2) is False
    assert regret({**estimate, "b": 1.0}, truth) == 0.0
    # A failed truth (NaN) is not a candidate; nothing in common gives NaN / None.
    assert regret(estimate, {**truth, "b": NAN}) == pytest.approx(1.0)
    assert math.isnan(regret({"x": 1.0}, truth)) and top_k_hit({"x": 1.0}, truth) is None
    # Ties in the estimate fall back to the id order: stable, whatever the dict order.
    assert regret({"b": 1.0, "a": 1.0}, truth) == regret({"a": 1.0, "b": 1.0}, truth) == pytest.approx(2.5)


# ------------------------------------------------------------------ reference architectures
def test_band_members_fit_the_band_and_the_baselines_fit_the_budget():
    spec = OracleSpec(space="cvt", budget="4GFLOPs", members=5, sample_seed=3)
    refs = reference_architectures(spec)
    sampled = [r for r in refs if r.kind == "sampled"]
    assert len(sampled) == 5 and len({r.arch_id for r in refs}) == len(refs)
    assert all(3.2e9 < r.macs <= 4e9 for r in sampled)
    assert all(r.macs == analytic_macs(r.config, 224, num_classes=1000) for r in refs)
    shrunk, anchor = refs[-2:]
    assert (shrunk.kind, anchor.kind) == ("shrunk", "anchor") and anchor.config == cvt.preset("cvt_13")
    assert shrunk.macs <= 4e9 < anchor.macs and shrunk.config.depths == anchor.config.depths
    # The widest multiplier that fits: one grid step wider no longer fits.
    assert shrunk.macs > 0.95 * 4e9
    # More members extend the same sequence: an oracle can grow across runs.
    more = reference_architectures(OracleSpec(space="cvt", budget="4GFLOPs", members=7, sample_seed=3))
    assert [r.arch_id for r in more[:5]] == [r.arch_id for r in sampled]


def test_shrink_to_fit_keeps_a_fitting_config_and_refuses_an_impossible_budget():
    cvt13 = cvt.preset("cvt_13")

    def under(limit):
        return lambda c: analytic_macs(c, 224, num_classes=1000) <= limit

    assert shrink_to_fit(cvt13, under(5e9)) is cvt13
    assert shrink_to_fit(cvt13, under(1e3)) is None
    small = shrink_to_fit(cvt13, under(1e9))
    assert analytic_macs(small, 224, num_classes=1000) <= 1e9
    assert all(d % h == 0 for d, h in zip(small.embed_dims, small.num_heads))


def test_jobs_run_seed_zero_first_and_shards_split_them():
    spec = OracleSpec(members=4, noise_members=2, seeds=3)
    refs = reference_architectures(spec)
    work = jobs(spec, refs)
    assert [s for _, s in work] == [0] * len(refs) + [1, 1, 2, 2]
    data = load_dataset("synthetic")
    shards = [shard_jobs(work, spec, data, k, 2) for k in range(2)]
    assert sorted(map(id, shards[0] + shards[1])) == sorted(map(id, work))
    assert not set(map(id, shards[0])) & set(map(id, shards[1]))


def test_bad_specs_are_one_clear_error():
    with pytest.raises(UserError, match="band"):
        OracleSpec(band=(1.0, 0.8))
    with pytest.raises(UserError, match="latency"):
        OracleSpec(budget="2ms")
    with pytest.raises(UserError, match="holds no member"):
        reference_architectures(OracleSpec(budget="4GFLOPs", band=(0.0, 0.001)))
    with pytest.raises(UserError, match="cheapest member"):
        reference_architectures(OracleSpec(budget="1M"))
    with pytest.raises(UserError, match="widen the band"):
        reference_architectures(OracleSpec(budget="4GFLOPs", members=3, max_draws=5))


# ------------------------------------------------------------------ the store, through the command
QUICK = ["--quick", "--data", "synthetic", "--threads", "1"]


def _results(path):
    return json.loads(path.read_text())["results"]


def test_oracle_resumes_merges_shards_and_refuses_other_settings(oracle_script, tmp_path, capsys):
    whole, part0, part1, merged = (tmp_path / n for n in ("whole.json", "0.json", "1.json", "merged.json"))
    assert oracle_script.main(QUICK + ["--out", str(whole)]) == 0
    results = _results(whole)
    assert sum(len(by_seed) for by_seed in results.values()) == 8  # 6 references at seed 0, 2 noise members
    text = capsys.readouterr().out
    assert "seed 1 (noise ceiling)" in text and "| params |" in text
    assert "| nan |" not in text.split("Within the band")[0]  # every reference trained: minutes shown

    # A rerun trains nothing and leaves the results as they were.
    stamp = whole.stat().st_mtime_ns
    assert oracle_script.main(QUICK + ["--out", str(whole)]) == 0
    assert "0 training(s) left" in capsys.readouterr().out
    assert whole.stat().st_mtime_ns == stamp

    # Two shards, merged, hold the same trainings with the same accuracies as one run.
    for k, part in enumerate((part0, part1)):
        assert oracle_script.main(QUICK + ["--shard", f"{k}/2", "--out", str(part)]) == 0
    pairs = [{(a, s) for a, by in _results(p).items() for s in by} for p in (part0, part1)]
    assert not pairs[0] & pairs[1] and len(pairs[0] | pairs[1]) == 8 and pairs[0] and pairs[1]
    assert oracle_script.main(QUICK + ["--merge", str(part0), str(part1), "--out", str(merged), "--report"]) == 0
    got = _results(merged)
    assert {a: {s: r["accuracy"] for s, r in by.items()} for a, by in got.items()} == \
        {a: {s: r["accuracy"] for s, r in by.items()} for a, by in results.items()}

    # Another recipe or band: refused with one line and exit 2, and the file is untouched.
    before = whole.read_bytes()
    for other in (["--band", "0.5", "1.0"], ["--sample-seed", "1"]):
        assert run_main(oracle_script.main, QUICK + other + ["--out", str(whole)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "other settings" in err and "\n" not in err
    spec = OracleSpec(members=4, noise_members=2)
    with pytest.raises(UserError, match="recipe.epochs 1 there, 3 here"):
        OracleStore.open(whole, spec, load_dataset("synthetic"))
    assert whole.read_bytes() == before


def test_oracle_refuses_files_that_are_not_oracles(tmp_path):
    path = tmp_path / "x.json"
    for text in ("not json", json.dumps({"format": "something else"}), json.dumps([1, 2])):
        path.write_text(text)
        with pytest.raises(UserError, match="not a ranking-oracle file"):
            OracleStore.open(path, OracleSpec(), load_dataset("synthetic"))


def test_stores_sharing_a_file_keep_each_others_results(tmp_path):
    # Two processes writing one file (shards of a benchmark): neither save drops what the other saved.
    path, identity = tmp_path / "shared.json", {"recipe": "r"}
    first, second = OracleStore.at(path, identity), OracleStore.at(path, identity)
    first.put("a", "0", {"accuracy": 50.0}, {"name": "a"})
    second.put("b", "0", {"accuracy": 51.0}, {"name": "b"})
    first.put("c", "1", {"accuracy": 52.0}, {"name": "c"})
    again = OracleStore.at(path, identity)
    assert {(a, s) for a, by in again.results.items() for s in by} == {("a", "0"), ("b", "0"), ("c", "1")}
    assert again.accuracy("b") == 51.0 and set(again.architectures) == {"a", "b", "c"}


# ------------------------------------------------------------------ fidelity against the oracle
def test_random_fidelity_and_oracle_truth_on_fixed_numbers(tmp_path):
    from nas.ranking import oracle_truth, random_fidelity

    r = random_fidelity({"a": 50.0, "b": 54.0, "c": 52.0, "d": NAN})
    assert (r.tau, r.n, r.regret, r.top3) == (0.0, 3, pytest.approx(2.0), 1.0)
    store = OracleStore(None, {})
    for arch, seed, acc in (("a", 0, 50.0), ("a", 1, 52.0), ("b", 0, NAN), ("b", 1, 40.0)):
        store.results.setdefault(arch, {})[str(seed)] = {"accuracy": acc}
    assert oracle_truth(store, ["a", "b", "c"]) == {"a": 51.0, "b": 40.0, "c": pytest.approx(NAN, nan_ok=True)}


@pytest.fixture(scope="module")
def quick_oracle(oracle_script, tmp_path_factory):
    path = tmp_path_factory.mktemp("oracle") / "oracle.json"
    assert oracle_script.main(QUICK + ["--out", str(path)]) == 0
    return path


def test_estimator_fidelity_measures_resumes_and_merges(quick_oracle, tmp_path, capsys):
    bench = load_script("estimator_fidelity")
    args = ["--oracle", str(quick_oracle), "--quick", "--data", "synthetic", "--threads", "1",
            "--estimators", "proxy-2x", "naswot", "--checkpoints", str(tmp_path / "rungs")]
    whole = tmp_path / "e.json"
    assert bench.main(args + ["--out", str(whole)]) == 0
    text = capsys.readouterr().out
    for row in ("| proxy-2x |", "| naswot |", "| params |", "| macs |", "| random |", "noise ceiling"):
        assert row in text
    results = json.loads(whole.read_text())["results"]
    # The 2x rung climbs from the base rung, which is recorded on the way; only the top checkpoint stays.
    assert len(results) == 5 and all(set(r) == {"proxy", "proxy-2x", "naswot"} for r in results.values())
    assert all(r["proxy-2x"]["seconds"] > r["proxy"]["seconds"] for r in results.values())
    assert sorted(p.name for p in (tmp_path / "rungs").rglob("*.pt")) == ["rung-1.pt"] * 5
    assert bench.main(args + ["--out", str(whole)]) == 0
    assert "0 estimate(s) to make" in capsys.readouterr().out
    parts = [tmp_path / f"{k}.json" for k in range(2)]
    for k, part in enumerate(parts):
        assert bench.main(args + ["--shard", f"{k}/2", "--out", str(part)]) == 0
    merged = tmp_path / "m.json"
    assert bench.main(args + ["--merge", *map(str, parts), "--out", str(merged), "--report"]) == 0
    got = json.loads(merged.read_text())["results"]
    assert {a: {e: r["value"] for e, r in by.items()} for a, by in got.items()} == \
        {a: {e: r["value"] for e, r in by.items()} for a, by in results.items()}
    # Estimates made with other proxy settings are refused, the file untouched.
    before = whole.read_bytes()
    assert run_main(bench.main, [a for a in args if a != "--quick"] + ["--out", str(whole)]) == 2
    assert "other settings" in capsys.readouterr().err and whole.read_bytes() == before


def test_search_efficiency_against_the_oracle_trains_the_picks_it_lacks(quick_oracle, tmp_path, capsys,
                                                                         monkeypatch):
    monkeypatch.setenv("CVT_NAS_CACHE", str(tmp_path / "cache"))
    bench = load_script("search_efficiency")
    args = ["--quick", "--space", "cvt", "--budget", "4GFLOPs", "--data", "synthetic", "--threads", "1",
            "--seeds", "0", "--samplers", "random", "tpe+promotion", "--out-dir", str(tmp_path / "eff"),
            "--oracle", str(quick_oracle)]
    assert bench.main(args) == 0
    text = capsys.readouterr().out
    assert "| random | 1 | " in text and "| tpe+promotion | 1 | " in text and "within 0.5 points" in text
    for line in (t for t in text.splitlines() if t.startswith("| random | 1 | ") and " of 1 |" in t):
        cells = [c.strip() for c in line.strip("|").split("|")]
        on_way, final = (float(cells[k].split(" ")[0]) for k in (4, 5))
        # The closest a run came is at least its final pick unless an earlier one held (and judging stopped there).
        assert on_way >= final or cells[2] == "1 of 1"
    rows = bench.read_trials(tmp_path / "eff" / "tpe+promotion-seed0")
    assert sorted(r["rung"] for r in rows if r["status"] == "trained") == [0] * 4 + [1] * 2 + [2]
    # Picks the oracle lacks were trained with its recipe, once each, up to the first that held and the final one;
    # a report reads them back.
    events = {run: bench.picks(tmp_path / "eff" / run) for run in ("random-seed0", "tpe+promotion-seed0")}
    picks = {p["arch_id"] for run in events.values() for _, p in run}
    finals = {run[-1][1]["arch_id"] for run in events.values()}
    oracle = json.loads(quick_oracle.read_text())["architectures"]
    stored = json.loads((tmp_path / "eff" / "incumbents.json").read_text())["results"]
    assert finals - set(oracle) <= set(stored) <= picks - set(oracle)
    stamp = (tmp_path / "eff" / "incumbents.json").stat().st_mtime_ns
    assert bench.main(args + ["--report-only"]) == 0
    assert bench.main(args + ["--report-only", "--finals-only"]) == 0
    assert "| random | 1 | - | - |" in capsys.readouterr().out  # final picks judged, the compute to hold left open
    assert (tmp_path / "eff" / "incumbents.json").stat().st_mtime_ns == stamp
    # Trainings of the same recipe and data elsewhere are taken, not repeated (a report trains nothing).
    again = tmp_path / "again.json"
    assert bench.main(args + ["--report-only", "--incumbents", str(again), "--reuse",
                              str(tmp_path / "eff" / "incumbents.json")]) == 0
    assert json.loads(again.read_text())["results"] == stored
    # An oracle of another space is one clear line.
    assert run_main(bench.main, [a if a != "cvt" else "cvt13-nas" for a in args] + ["--report-only"]) == 2
    assert "measured space cvt" in capsys.readouterr().err


def test_search_efficiency_of_a_supernet_search_counts_its_scores_and_its_supernet(quick_oracle, tmp_path, capsys,
                                                                                     monkeypatch):
    monkeypatch.setenv("CVT_NAS_CACHE", str(tmp_path / "cache"))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("steps: 3\nbatch_size: 16\ntrain_subset: 128\npool: 10\n")
    bench = load_script("search_efficiency")
    out = tmp_path / "eff"
    args = ["--quick", "--space", "cvt", "--budget", "4GFLOPs", "--data", "synthetic", "--threads", "1",
            "--seeds", "0", "--samplers", "tpe+supernet", "--supernet-trials", "6", "--supernet-recipe", str(recipe),
            "--out-dir", str(out), "--oracle", str(quick_oracle)]
    assert bench.main(args) == 0
    text = capsys.readouterr().out
    row = next(line for line in text.splitlines() if line.startswith("| tpe+supernet | 1 | ") and "CPU-min" in line)
    assert "min wall" in row and "(1 thread(s)) on cpu" in row  # the supernet's own training, from its cache
    rows = bench.read_trials(out / "tpe+supernet-seed0")
    scores = [r for r in rows if r["status"] == "trained" and r["screening"]]
    confirmed = [r for r in rows if r["status"] == "trained" and not r["screening"]]
    assert len(scores) == 6 and len(confirmed) == 3 and {r["rung"] for r in confirmed} == {2}
    # The front curves count the confirmations only; the compute counts the scores too, and nothing is picked
    # before the first confirmation.
    saved = json.loads((out / "efficiency.json").read_text())["runs"]["tpe+supernet"][0]
    assert len(saved["hypervolume"]) == 3
    events = bench.picks(out / "tpe+supernet-seed0")
    assert 1 <= len(events) <= 3 and not any(p["screening"] for _, p in events)
    scoring = sum(r["train_wall_s"] * r["threads"] for r in scores)
    assert events[0][0] > scoring > 0
    with pytest.raises(SystemExit) as stop:
        bench.main(args[:-2] + ["--samplers", "tpe+nothing"])
    assert stop.value.code == 2 and "unknown sampler 'tpe+nothing'" in capsys.readouterr().err


def test_supernet_fidelity_scores_the_band_and_reuses_its_supernet(quick_oracle, tmp_path, capsys):
    bench = load_script("supernet_fidelity")
    out = tmp_path / "s.json"
    args = ["--oracle", str(quick_oracle), "--quick", "--data", "synthetic", "--threads", "1", "--device", "cpu",
            "--cache-dir", str(tmp_path / "cache"), "--throughput", "3", "--out", str(out)]
    assert bench.main(args) == 0
    text = capsys.readouterr().out
    for row in ("| supernet (inherited) |", "| params |", "| random |", "noise ceiling", "members per CPU-minute"):
        assert row in text
    results = json.loads(out.read_text())["results"]
    assert len(results) == 5 and all(0 <= r["supernet"]["value"] <= 100 for r in results.values())
    costs = json.loads((tmp_path / "s-costs.json").read_text())
    assert costs["training"]["steps"] == 4 and costs["training"]["wall_s"] > 0 and costs["scoring"]["n"] == 3
    # An estimator_fidelity.py file puts its proxy rungs beside the supernet (here: made-up values, its format).
    from nas.ranking import EstimateStore

    estimates = EstimateStore(tmp_path / "e.json", {"made": "here"})
    for arch_id, record in json.loads(quick_oracle.read_text())["architectures"].items():
        estimates.put(arch_id, "proxy-4x", {"value": float(record["params"]), "seconds": 1.0}, record)
    args += ["--estimates", str(tmp_path / "e.json")]
    assert bench.main(args + ["--finetune", "1"]) == 0  # the cached supernet, nothing left to score
    text = capsys.readouterr().out
    assert "(cached); 0 of 5 band architectures to score" in text and "| inherited |" in text and "| scratch |" in text
    assert "| proxy-4x |" in text
    costs_after = json.loads((tmp_path / "s-costs.json").read_text())
    assert costs_after["training"] == costs["training"]
    assert len(costs_after["finetune"]["inherited"]) == len(costs_after["finetune"]["scratch"]) == 1


def test_supernet_search_times_a_second_budget_beside_the_proxy_search(tmp_path, monkeypatch, capsys):
    from conftest import TINY_SPACE

    monkeypatch.setenv("CVT_NAS_CACHE", str(tmp_path / "cache"))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("steps: 3\nbatch_size: 16\ntrain_subset: 128\npool: 10\n")
    bench = load_script("supernet_search")
    args = ["--space", str(TINY_SPACE), "--data", "synthetic", "--trials", "6", "--confirm", "1", "--quick",
            "--supernet-recipe", str(recipe), "--runs", str(tmp_path / "runs")]
    assert bench.main(args + ["--budget", "4.5MFLOPs"]) == 0
    assert "trained by this run" in capsys.readouterr().out
    out = tmp_path / "s.json"
    assert bench.main(args + ["--budget", "4MFLOPs", "--baseline", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| supernet | 6 |" in text and "| proxy | 0 |" in text and "cached (not trained by this run)" in text
    results = json.loads(out.read_text())
    assert results["supernet"]["scoring"]["n"] == 6 and results["supernet"]["training"]["n"] == 1
    from nas.search._config import DEFAULT_TRIALS

    n = DEFAULT_TRIALS[False]  # the baseline is the default proxy search: n candidates, the best half promoted
    assert results["supernet"]["best"]["rung"] == 1 and results["proxy"]["training"]["n"] == n + n // 2


def test_reference_comparison_trains_picks_and_baselines_under_two_seeds(quick_oracle, tmp_path, capsys,
                                                                         monkeypatch):
    from nas.search import SearchConfig, run_search

    monkeypatch.setenv("CVT_NAS_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "cvt-4g"
    run_search(SearchConfig.create(space="cvt", budget="4GFLOPs", trials=2, data="synthetic", threads=1,
                                   proxy={"epochs": 1, "train_subset": 128, "val_subset": 64, "width_mult": 0.25},
                                   rungs="1", self_check=0, max_untrained=2000, out=str(run)))
    bench = load_script("reference_comparison")
    out, png = tmp_path / "cmp.json", tmp_path / "cmp.png"
    args = QUICK + ["--runs", str(run), "--top", "2", "--random", "2", "--out", str(out)]
    # Two shards writing one file hold every training once, under both seeds; the oracle's trainings of the same
    # architectures (same recipe and data) are taken, not repeated.
    for k in (0, 1):
        assert bench.main(args + ["--shard", f"{k}/2", "--reuse", str(quick_oracle)]) == 0
    results = _results(out)
    oracle = _results(quick_oracle)
    shared = {(a, s) for a in results if a in oracle for s in oracle[a] if s in ("0", "1")}
    assert len(shared) >= 2 and all(results[a][s] == oracle[a][s] for a, s in shared)
    kinds = {r["kind"] for r in json.loads(out.read_text())["architectures"].values()}
    assert kinds == {"search", "sampled", "shrunk", "anchor"} and len(results) == 6
    assert all(set(by) == {"0", "1"} for by in results.values())
    capsys.readouterr()
    stamp = out.stat().st_mtime_ns
    assert bench.main(args + ["--report", "--plot", str(png)]) == 0
    text = capsys.readouterr().out
    assert "0 training(s) left" in text and out.stat().st_mtime_ns == stamp and png.stat().st_size > 0
    line = next(t for t in text.splitlines() if t.startswith("cvt-4g at 4.00 GMACs: its pick"))
    assert "cvt_13 shrunk to fit" in line and "the best random member" in line
    assert any(word in line for word in ("beats", "ties with", "loses to"))
    # The best of the run's top 2 gets its own verdict where it is not the pick.
    names = {a["name"]: a["arch_id"] for a in json.loads(out.read_text())["architectures"].values()}
    mean = {n: sum(results[names[n]][s]["accuracy"] for s in ("0", "1")) / 2 for n in ("cvt-4g #1", "cvt-4g #2")}
    second_better = mean["cvt-4g #2"] > mean["cvt-4g #1"]
    assert ("the best of its top 2, cvt-4g #2 (chosen on these trainings, so optimistic)" in text) == second_better
    # A run of another space, or trainings of another recipe to reuse: one clear line each.
    assert run_main(bench.main, args + ["--space", "cvt13-nas"]) == 2
    assert "searched space cvt" in capsys.readouterr().err
    other = json.loads(quick_oracle.read_text())
    other["settings"]["recipe"]["epochs"] = 5
    (tmp_path / "other.json").write_text(json.dumps(other))
    assert run_main(bench.main, args + ["--reuse", str(tmp_path / "other.json")]) == 2
    assert "trained with another recipe" in capsys.readouterr().err


def test_reference_comparison_verdict_on_fixed_numbers():
    bench = load_script("reference_comparison")
    assert bench.compare((52.0, 2), (50.0, 2), 0.5)[2] == "beats"  # 2.0 > 2 * 0.5 * 1
    assert bench.compare((50.5, 2), (50.0, 2), 0.5)[2] == "ties with"
    assert bench.compare((48.0, 2), (50.0, 2), 0.5)[2] == "loses to"
    assert bench.compare((48.0, 2), (50.0, 0), 0.5)[2] == "not measured against"
