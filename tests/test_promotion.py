"""Multi-fidelity promotion and the self-check: the decision rules on fixed trials and numbers, and end to end
on the tiny space with the synthetic task."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

import nas.proxy
from cvt import CvTConfig, UserError
from nas.search import SearchConfig, run_search
from nas.search._options import parse_config
from nas.search._promotion import Promotion, deadlines, next_promotion, next_step, promotion_order
from nas.search._self_check import default_k, verdict

from test_search import TINY_TRAINING, cli, load_study, read_csv


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("CVT_NAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CVT_NAS_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)


def search_args(space: str, out, trials: int, *extra: str) -> list[str]:
    return ["--space", space, "--budget", "4.5MFLOPs", "--trials", str(trials), "--out", str(out), *TINY_TRAINING,
            "--rungs", "1,2,4", *extra]


# ---------------------------------------------------------------------------- the decision on fixed trials
def test_promotion_order_is_non_dominated_rank_then_accuracy():
    # (accuracy, -GMACs): 1 and 2 and 3 are non-dominated (2 and 3 because they are cheap), 0 is dominated by 1.
    assert promotion_order([(50.0, -4.0), (52.0, -3.9), (45.0, -1.0), (49.0, -3.0)]) == [1, 3, 2, 0]
    assert promotion_order([(50.0,), (52.0,), (51.0,)]) == [1, 2, 0]  # accuracy alone: plain order
    assert promotion_order([]) == []


def _trial(number, state="COMPLETE", status="trained", accuracy=50.0, macs=3e9, feasible=True, **attrs):
    return SimpleNamespace(number=number, state=SimpleNamespace(name=state), params={"n": number},
                           constraints={"macs_budget": -0.1 if feasible else 0.2},
                           user_attrs={"status": status, "accuracy": accuracy, "macs": macs,
                                       "arch_id": attrs.pop("arch_id", f"a{number}"), **attrs})


CONFIG = SearchConfig.create(budget="4G", trials=4, rungs="1,2,4", reduction=2)


def test_next_promotion_halves_each_rung_once_it_is_closed():
    first = [_trial(0, accuracy=50), _trial(1, accuracy=55), _trial(2, accuracy=52, macs=1e9),
             _trial(3, accuracy=40, feasible=False, status="over_budget"), _trial(4, accuracy=48)]
    assert next_promotion(CONFIG, first + [_trial(5, state="RUNNING")]) == "wait"  # rung 0 still open
    promotion = next_promotion(CONFIG, first)
    assert isinstance(promotion, Promotion) and (promotion.source.number, promotion.rung) == (1, 1)
    assert promotion.user_attrs() == {"rung": 1, "root": 1, "promoted_from": 1}
    # Quota 4 // 2 = 2: the cheap 52% (non-dominated) goes next, before 50% at the same cost as 55%.
    claimed = first + [_trial(6, state="RUNNING", rung=1, root=1)]
    assert next_promotion(CONFIG, claimed).source.number == 2
    both = claimed + [_trial(7, state="WAITING", rung=1, root=2)]
    assert next_promotion(CONFIG, both) == "wait"  # rung 1 full but not finished
    done = first + [_trial(6, rung=1, root=1, accuracy=58), _trial(7, rung=1, root=2, accuracy=61, macs=1e9)]
    top = next_promotion(CONFIG, done)
    assert (top.source.number, top.rung, top.user_attrs()["root"]) == (7, 2, 2)
    finished = done + [_trial(8, rung=2, root=2, accuracy=63, macs=1e9)]
    assert next_promotion(CONFIG, finished) is None
    # An interrupted promotion does not use up the quota (its re-queued copy does).
    interrupted = done[:-1] + [_trial(7, state="FAIL", status="interrupted", rung=1, root=2)]
    assert next_promotion(CONFIG, interrupted).source.number == 2
    # A failed one does: it is not tried again, and the next rung's quota counts what finished (1 // 2).
    failed = done[:-1] + [_trial(7, state="FAIL", status="failed", rung=1, root=2)]
    assert next_promotion(CONFIG, failed) is None


def test_next_step_samples_first_then_promotes_then_stops():
    assert next_step(CONFIG, [], None, None).action == "sample"
    first = [_trial(i, accuracy=50 + i) for i in range(4)]
    step = next_step(CONFIG, first, None, None)
    assert step.action == "promote" and step.promotion.source.number == 3
    done = first + [_trial(4, rung=1, root=3, accuracy=60), _trial(5, rung=1, root=2, accuracy=58),
                    _trial(6, rung=2, root=3, accuracy=62)]
    step = next_step(CONFIG, done, None, None)
    assert step.action == "stop" and step.reason == "4 proxy trainings done; 2 + 1 promoted (rungs 1x/2x/4x)"
    assert next_step(CONFIG, first, deadline=0.0, sampling_deadline=0.0).reason == "timeout reached"
    queued = first + [_trial(4, state="WAITING", rung=1, root=3)]  # re-queued after a kill: taken first
    assert next_step(CONFIG, queued, None, None).action == "resume"
    # The sampling deadline ends the first rung early; promotions go on until the deadline.
    step = next_step(CONFIG, first[:2], deadline=math.inf, sampling_deadline=0.0)
    assert step.action == "promote" and step.promotion.source.number == 1


def test_timeout_gives_the_first_rung_its_share_and_the_schedule_its_cost():
    promotion = CONFIG.promotion
    assert promotion.quotas(10) == [10, 5, 2] and promotion.compute(10) == 10 + 5 * 1 + 2 * 2
    assert promotion.first_share == pytest.approx(1 / (1 + 0.5 * 1 + 0.25 * 2))
    config = CONFIG.replace(timeout="100")
    assert deadlines(config, start=0.0) == (100.0, pytest.approx(50.0))
    assert deadlines(CONFIG) == (None, None)
    assert SearchConfig.create(rungs="1").promotion.first_share == 1.0


@pytest.mark.parametrize("settings, message", [
    ({"rungs": "1,2,4", "trials": 3}, "needs at least 4 candidates"),
    ({"rungs": "2,4"}, "starting at 1"), ({"rungs": "1,x"}, "increasing whole multiples"),
    ({"reduction": 1}, "--reduction = 1"), ({"self_check": -1}, "--self-check = -1"),
    ({"scheduler": "asha", "backend": "ray", "rungs": "1,2"}, "--scheduler asha and promotion"),
])
def test_bad_promotion_settings_are_one_clear_error(settings, message):
    with pytest.raises(UserError, match=message):
        SearchConfig.create(**settings)


def test_defaults_promote_and_check_as_many_as_half_the_compute_allows():
    assert SearchConfig.create().promotion.rungs == (1, 2, 4)  # by measurement: docs/performance.md
    assert SearchConfig.create(estimator="naswot").promotion.rungs == (1,)  # a score has no rungs
    assert default_k(SearchConfig.create(estimator="naswot"), trains=False) == 0
    # Up to 3, within half of the run's compute: 10 candidates at 1x/2x/4x are 19 units, a check training 4.
    assert default_k(SearchConfig.create()) == 1
    assert default_k(SearchConfig.create(trials=40)) == 3
    assert default_k(SearchConfig.create(trials=4)) == 0
    # Without promotion every training is 1 unit.
    assert default_k(SearchConfig.create(rungs="1")) == 3
    assert default_k(SearchConfig.create(rungs="1", trials=4)) == 1
    assert default_k(SearchConfig.create(rungs="1", trials=2)) == 0


def test_a_screening_estimator_confirms_its_best_k_at_the_top_rung():
    config = SearchConfig.create(budget="4G", estimator="supernet", trials=4, confirm=2)
    promotion = config.promotion
    assert promotion.ladder == (0, 2) and promotion.quotas(4) == [4, 2] and promotion.quotas(1) == [1, 1]
    assert promotion.budget_of(0) == 0 and promotion.budget_of(2) == 4
    assert promotion.compute(4) == 2 * 4 and promotion.units([4, 0, 1]) == 4  # scores are free; a confirmation 4x
    assert SearchConfig.create(estimator="supernet").promotion.confirm == 3  # the default
    assert SearchConfig.create(estimator="supernet").sampling.trials == 1000
    assert SearchConfig.create().sampling.trials == 8
    first = [_trial(0, accuracy=30), _trial(1, accuracy=35), _trial(2, accuracy=33, macs=1e9), _trial(3, accuracy=20)]
    assert next_promotion(config, first + [_trial(4, state="RUNNING")]) == "wait"
    top = next_promotion(config, first)
    assert (top.source.number, top.rung) == (1, 2)  # straight to the top rung, no rung 1
    claimed = first + [_trial(5, state="RUNNING", rung=2, root=1)]
    assert next_promotion(config, claimed).source.number == 2  # the cheap one on the first front next
    done = first + [_trial(5, rung=2, root=1), _trial(6, rung=2, root=2)]
    assert next_promotion(config, done) is None
    step = next_step(config, done, None, None)
    assert step.action == "stop" and "2 confirmed at the top rung (4x)" in step.reason


@pytest.mark.parametrize("settings, message", [
    ({"confirm": 2}, "--confirm applies to a screening estimator"),
    ({"estimator": "supernet", "rungs": "1"}, "at least two rungs"),
    ({"supernet_range": "2,4"}, "only apply with --estimator supernet"),
    ({"estimator": "supernet", "supernet_range": "4,2"}, "LOW must be at least 0 and below HIGH"),
    ({"estimator": "supernet", "supernet_range": "two"}, "give LOW,HIGH in GMACs"),
    ({"estimator": "supernet", "confirm": 0}, "--confirm = 0"),
])
def test_bad_screening_settings_are_one_clear_error(settings, message):
    with pytest.raises(UserError, match=message):
        SearchConfig.create(**settings)


# ---------------------------------------------------------------------------- the verdict on fixed numbers
def _entries(search, check, baseline, macs=(3e9, 3.2e9, 2.5e9), base_macs=4e9, rung=2):
    top = [{"label": f"#{i}", "number": 10 + i, "rung": rung, "macs": m, "search_accuracy": s, "check_accuracy": c}
           for i, (s, c, m) in enumerate(zip(search, check, macs), 1)]
    return top + [{"label": "baseline", "name": "cvt_13 shrunk to fit", "macs": base_macs, "check_accuracy": baseline}]


def test_verdict_the_winner_holds():
    v = verdict(_entries((60.0, 58.0, 55.0), (60.5, 57.6, 55.3), 55.0), rung=2)
    assert v["holds"] is True and v["tau"] == pytest.approx(1.0)
    assert v["text"].startswith("the winner holds: +5.5 points over the baseline (cvt_13 shrunk to fit) at 75% of "
                                "its MACs")
    assert "order of its top 3 holds with Kendall tau +1.00" in v["text"]
    noise = math.sqrt((0.5 ** 2 + 0.4 ** 2 + 0.3 ** 2) / 6)
    assert v["noise"] == pytest.approx(noise) and v["margin"] == pytest.approx(2 * math.sqrt(2) * noise)


def test_verdict_within_noise_and_not_holding():
    v = verdict(_entries((60.0, 59.5, 59.0), (58.0, 60.5, 59.5), 58.5), rung=2)
    assert v["holds"] is None and "within noise" in v["text"]
    assert "the top 3 are within noise of each other: pick by cost (the cheapest is trial 13, 2.5 GMACs)" in v["text"]
    v = verdict(_entries((60.0,), (59.5,), 66.0, macs=(3e9,)), rung=2, val_images=10000)
    assert v["holds"] is False and v["tau"] is None
    assert v["noise"] == pytest.approx(100 * math.sqrt(0.6275 * 0.3725 / 10000))  # evaluation noise is larger
    assert v["text"].startswith("the pick does not hold: the baseline (cvt_13 shrunk to fit) beats the winner by 6.5")
    # Nothing was trained at the check's rung: only the evaluation's binomial noise is known.
    v = verdict(_entries((40.0,), (60.0,), 50.0, macs=(3e9,), rung=0), rung=2, val_images=1000)
    assert v["noise"] == pytest.approx(100 * math.sqrt(0.55 * 0.45 / 1000)) and v["holds"] is True
    assert "noise from the evaluation alone" in v["text"]


# ---------------------------------------------------------------------------- end to end
def test_search_promotes_continues_from_checkpoints_and_checks_itself(tmp_path, tiny_space, capsys):
    out = tmp_path / "run"
    code, stdout, stderr = cli(search_args(tiny_space, out, 4, "--self-check", "2"), capsys)
    assert code == 0, stderr
    assert "promotion: rungs 1x/2x/4x" in stderr and "4 -> 2 -> 1" in stderr
    rows = read_csv(out / "trials.csv")
    trained = [r for r in rows if r["status"] == "trained"]
    by_rung = {r: [t for t in trained if t["rung"] == r] for r in ("0", "1", "2")}
    assert [len(by_rung[r]) for r in ("0", "1", "2")] == [4, 2, 1]
    # Promoted in non-dominated order at each rung.
    study = load_study(out)
    config = parse_config(search_args(tiny_space, out, 4))
    first = [t for t in study.trials if t.user_attrs.get("status") == "trained" and not t.user_attrs.get("rung")]
    objectives = config.space.objective_names
    order = promotion_order([[t.user_attrs["accuracy"], -t.user_attrs["macs"]] for t in first])
    assert {int(r["root"]) for r in by_rung["1"]} == {first[i].number for i in order[:2]}
    assert objectives == ("accuracy", "macs")
    # The top rung continued its architecture's rung-1 checkpoint: training it again from those gives the same.
    top = by_rung["2"][0]
    model = CvTConfig.from_dict(json.loads(top["model_config"]))
    from nas.data import load_dataset
    from nas.search._objective import Evaluator

    evaluator = Evaluator(config, tmp_path / "scratch")
    again = nas.proxy.train_rung(model, load_dataset("synthetic"), evaluator.proxy_config(),
                                 config.promotion.schedule, 2, tmp_path / "scratch" / "ck")
    assert again.accuracy == pytest.approx(float(top["accuracy"]))
    # The front, the printed best and the export come from the highest rung.
    front = read_csv(out / "pareto.csv")
    assert front[0]["number"] == top["number"] and f"best: trial {top['number']}" in stdout
    assert "at rung 2 (4x the proxy budget)" in stdout
    # Only each architecture's highest checkpoint is kept.
    kept = {p.parent.name: p.name for p in (out / "checkpoints").rglob("*.pt")}
    assert kept[top["arch_id"]] == "rung-2.pt" and len(kept) == 4
    # The self-check: recorded in run.json and self_check.json, printed, and in the exports.
    manifest = json.loads((out / "run.json").read_text())
    check = manifest["self_check"]
    assert [e["label"] for e in check["entries"]] == ["#1", "#2", "baseline"] and check["seed"] == 1
    assert check["entries"][0]["arch_id"] == top["arch_id"]
    assert all(0 <= e["check_accuracy"] <= 100 for e in check["entries"])
    assert f"self-check (seed 1): {check['verdict']['text']}" in stdout
    export = next((out / "exports" / "best").glob("*.yaml")).read_text()
    assert f"self-check: {check['verdict']['text']}" in export
    assert not (out / "checkpoints" / "self-check").exists()


def test_promotions_and_the_self_check_train_side_by_side_with_the_same_results(tmp_path, tiny_space, capsys):
    # Two threads: the first rung trains one candidate at a time on both; a rung's promotions and the self-check's
    # trainings, chosen together, train in two processes of one thread each.
    from nas.data import load_dataset
    from nas.search._objective import Evaluator

    out = tmp_path / "run"
    args = search_args(tiny_space, out, 4, "--self-check", "1")
    args[args.index("--threads") + 1] = "2"
    code, _, stderr = cli(args, capsys)
    assert code == 0, stderr
    assert "(2 side by side)" in stderr
    trained = [r for r in read_csv(out / "trials.csv") if r["status"] == "trained"]
    assert sorted(r["rung"] for r in trained) == ["0"] * 4 + ["1"] * 2 + ["2"]
    assert {r["threads"] for r in trained if r["rung"] == "0"} == {"2"}
    assert {r["threads"] for r in trained if r["rung"] != "0"} == {"1"}
    # The same accuracies as training them again one at a time with those threads.
    config = parse_config(args)
    base = Evaluator(config, tmp_path / "scratch").proxy_config()
    schedule, dataset = config.promotion.schedule, load_dataset("synthetic")
    top = next(r for r in trained if r["rung"] == "2")
    model = CvTConfig.from_dict(json.loads(top["model_config"]))
    nas.proxy.train_rung(model, dataset, base, schedule, 0, tmp_path / "top")
    again = nas.proxy.train_rung(model, dataset, base.replace(threads=1), schedule, 2, tmp_path / "top")
    assert again.accuracy == pytest.approx(float(top["accuracy"]))
    check = json.loads((out / "self_check.json").read_text())
    baseline = check["entries"][-1]
    again = nas.proxy.train_rung(CvTConfig.from_dict(baseline["config"]), dataset, base.replace(threads=1, seed=1),
                                 schedule, 2, tmp_path / "baseline")
    assert baseline["label"] == "baseline" and again.accuracy == pytest.approx(baseline["check_accuracy"])


def test_a_killed_promotion_resumes_without_retraining_a_finished_rung(tmp_path, tiny_space, monkeypatch, capsys):
    real, calls, killed = nas.proxy.train_rung, [], []

    def train_rung(model, dataset, base, schedule, rung, directory, **kw):
        calls.append(rung)
        if rung == 1 and not killed:
            killed.append(rung)
            raise KeyboardInterrupt  # Ctrl-C during the first promotion
        return real(model, dataset, base, schedule, rung, directory, **kw)

    monkeypatch.setattr(nas.proxy, "train_rung", train_rung)
    out = tmp_path / "run"
    args = search_args(tiny_space, out, 4, "--self-check", "0")
    with pytest.raises(KeyboardInterrupt):
        run_search(parse_config(args))
    assert calls == [0, 0, 0, 0, 1]
    interrupted = [r for r in read_csv(out / "trials.csv") if r["status"] == "interrupted"]
    assert [r["rung"] for r in interrupted] == ["1"]
    calls.clear()
    result = run_search(parse_config(args + ["--resume"]))
    assert calls == [1, 1, 2]  # the two promotions and the top rung; no first rung trained again
    rows = read_csv(out / "trials.csv")
    assert sorted(r["rung"] for r in rows if r["status"] == "trained") == ["0"] * 4 + ["1"] * 2 + ["2"]
    assert result.best["rung"] == 2
    capsys.readouterr()


def test_a_baseline_over_every_budget_is_one_line_and_creates_nothing(tmp_path, tiny_space, capsys):
    out = tmp_path / "run"
    # Members of the tiny space have 71k-173k parameters; CvT-W24 at its narrowest still has 101k.
    code, _, stderr = cli(search_args(tiny_space, out, 4, "--self-check", "1", "--baseline", "cvt_w24",
                                      "--params-budget", "90k"), capsys)
    assert code == 2 and not out.exists()
    assert "--baseline cvt_w24 exceeds the budget" in stderr and len(stderr.strip().splitlines()) == 1
    code, _, stderr = cli(search_args(tiny_space, out, 4, "--self-check", "1", "--baseline", "no_such_model"), capsys)
    assert code == 2 and "--baseline no_such_model" in stderr and not out.exists()
