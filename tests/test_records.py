"""The search's pure bookkeeping on fixed inputs: the metric registry's reach, objective values, Pareto
rows, trial counts and stop reasons, durations, samplers, and settling interrupted trials."""
import math
from types import SimpleNamespace

import optuna
import pytest

import cvt
from cvt import ConfigError, UserError
from nas.metrics import COSTS, METRICS
from nas.search import SearchConfig
from nas.search._config import BUDGETED, option_fields, parse_duration
from nas.search._options import build_parser
from nas.search import read_trials_csv
from nas.search._outputs import _write_csv
from nas.search._records import (CSV_COLUMNS, highest_rungs, objective_values, pareto_rows, trial_row,
                                values_from_attrs)
from nas.search._rundir import open_storage
from nas.search._samplers import make_sampler
from nas.search._trials import count_trials, recover_interrupted, stop_reason


# ------------------------------------------------------------------ one fact in one place
def test_every_metric_reaches_csv_options_and_settings():
    options = {o for a in build_parser()._actions for o in a.option_strings}
    fields = set(option_fields())
    for m in METRICS.values():
        assert m.column in CSV_COLUMNS
        if m.budget_field:
            assert m.budget_option in options and m.budget_field in fields and m in BUDGETED
    assert [m.name for m in COSTS] == ["macs", "params", "latency"]
    assert SearchConfig.create(budget="4G", params_budget="20M", latency_budget="2ms").name == "cvt-4g-2ms-20m"


def test_families_are_one_record_each():
    assert set(cvt.FAMILIES) == {"cvt", "cct"}
    for family in cvt.FAMILIES.values():
        for config in family.presets.values():
            assert cvt.family_of(config) is family
            assert cvt.family_named(family.yaml_name) is family is cvt.family_named(type(config).__name__)
        assert isinstance(cvt.build_model(next(iter(family.presets.values())), 10), family.model_cls)
    with pytest.raises(ConfigError, match="registered already"):
        cvt.register_family(cvt.FAMILIES["cvt"])
    with pytest.raises(ConfigError, match="no model family takes a dict"):
        cvt.family_of({})


# ------------------------------------------------------------------ objective values and the front
def test_objective_values_use_each_metric_unit_and_placeholder():
    measures = {"accuracy": 61.5, "macs": 3.2e9, "params": 12.5e6, "latency": None}
    assert objective_values(["accuracy", "macs", "params"], measures) == [61.5, pytest.approx(3.2),
                                                                          pytest.approx(12.5)]
    assert objective_values(["accuracy", "latency"], {**measures, "accuracy": None}) == [0.0, math.inf]
    attrs = {"accuracy": 50.0, "macs": 2e9, "params": 1e6, "latency_ms": 4.0}
    assert values_from_attrs(["accuracy", "latency", "params"], attrs) == [50.0, 4.0, pytest.approx(1.0)]


def _row(number, accuracy, macs, status="trained", feasible=True, arch=None):
    return {"number": number, "accuracy": accuracy, "macs": macs, "params": 1, "latency_ms": None,
            "status": status, "feasible": feasible, "arch_id": arch or f"a{number}"}


def test_pareto_rows_keep_non_dominated_trained_feasible_once_per_architecture():
    rows = [_row(0, 60.0, 3e9), _row(1, 55.0, 2e9), _row(2, 54.0, 2.5e9),  # 2 is dominated by 1
            _row(3, 70.0, 5e9, feasible=False), _row(4, 65.0, 1e9, status="pruned"),
            _row(5, 60.0, 3e9, arch="a0"), _row(6, 62.0, 3.5e9)]  # 5 repeats 0's architecture
    assert [r["number"] for r in pareto_rows(rows, ["accuracy", "macs"])] == [6, 0, 1]
    assert [r["number"] for r in pareto_rows(rows, ["accuracy"])] == [6]
    assert pareto_rows([_row(0, float("nan"), 1e9)], ["accuracy", "macs"]) == []


def test_the_front_takes_each_architecture_at_its_highest_rung_and_decides_at_the_top():
    rows = [_row(0, 60.0, 3e9), _row(1, 58.0, 2e9), _row(2, 61.0, 1.5e9), _row(5, 70.0, 2e9),
            {**_row(3, 64.0, 2e9, arch="a1"), "rung": 1},  # a1 promoted: its rung-1 accuracy replaces 58
            {**_row(4, 59.0, 3e9, arch="a0"), "rung": 1}]  # a0 promoted: dominated by a1 at its rung
    front = pareto_rows(rows, ["accuracy", "macs"])
    # a5's 70% after less training cannot dominate a1 at rung 1, nor outrank it: the pick is a1.
    assert [(r["number"], r.get("rung", 0)) for r in front] == [(3, 1), (5, 0), (2, 0)]
    assert [r["number"] for r in highest_rungs(rows)] == [2, 3, 4, 5]


# ------------------------------------------------------------------ counting and stopping
def _trial(state, **attrs):
    return SimpleNamespace(state=SimpleNamespace(name=state), user_attrs=attrs,
                           constraints=attrs.pop("constraints", {"macs_budget": -0.1}))


def test_trials_csv_reads_back_as_the_rows_it_was_written_from(tmp_path):
    from datetime import datetime

    dist = {"x": optuna.distributions.IntDistribution(0, 9)}
    trained = optuna.trial.create_trial(
        params={"x": 3}, distributions=dist, values=[51.5, 3.2], user_attrs={
            "status": "trained", "arch_id": "abc", "rung": 2, "rung_budget": 4, "root": 0, "accuracy": 51.5,
            "macs": 3_200_000_000, "params": 4_000_000, "train_wall_s": 12.5, "threads": 1, "epochs": 2,
            "model_config": {"MODEL": {"NAME": "cls_cvt"}}},
        constraints={"macs": -0.2})
    trained.datetime_start = datetime(2026, 11, 27, 20, 0, 0)
    trained.datetime_complete = datetime(2026, 11, 27, 20, 0, 13)
    over = optuna.trial.create_trial(params={"x": 9}, distributions=dist, state=optuna.trial.TrialState.PRUNED,
                                     user_attrs={"status": "over_budget", "arch_id": "def", "macs": 9e9,
                                                 "screening": True}, constraints={"macs": 1.25})
    over.number, over.datetime_start = 1, datetime(2026, 11, 27, 20, 0, 14)
    rows = [trial_row(t) for t in (trained, over)]
    _write_csv(tmp_path / "trials.csv", rows)
    back = read_trials_csv(tmp_path / "trials.csv")
    assert [{k: r[k] for k in CSV_COLUMNS} for r in back] == [{k: r[k] for k in CSV_COLUMNS} for r in rows]
    assert back[0]["feasible"] is True and back[1]["feasible"] is False and back[1]["screening"] is True
    assert back[0]["threads"] == 1 and back[1]["accuracy"] is None and back[0]["param.x"] == "3"
    assert pareto_rows(back, ["accuracy", "macs"]) == [back[0]]


def test_count_trials_and_stop_reason():
    trials = [_trial("COMPLETE", status="trained", arch_id="a"), _trial("COMPLETE", status="over_budget",
                                                                         arch_id="b", constraints={"macs_budget": 0.3}),
              _trial("COMPLETE", status="duplicate", arch_id="a"), _trial("FAIL", status="failed", phase="training"),
              _trial("FAIL", status="failed", phase="sampled"), _trial("PRUNED", status="pruned", arch_id="c"),
              _trial("RUNNING"), _trial("WAITING"), _trial("FAIL", status="interrupted")]
    counts = count_trials(trials)
    assert counts == {"trainings": 3, "trained": 1, "pruned": 1, "failed": 2, "untrained": 3, "duplicates": 1,
                      "running": 1, "costed": 4, "feasible": 3, "interrupted": 1, "promotions": 0, "promoting": 0,
                      "per_rung": [1]}
    promotions = [_trial("COMPLETE", status="trained", arch_id="a", rung=1), _trial("RUNNING", rung=2),
                  _trial("FAIL", status="failed", rung=1), _trial("FAIL", status="interrupted", rung=1)]
    more = count_trials(trials + promotions)  # promotions count apart: --trials counts first-rung trainings
    assert {k: more[k] for k in ("trainings", "running", "promotions", "promoting", "failed", "per_rung")} == \
        {"trainings": 3, "running": 1, "promotions": 1, "promoting": 1, "failed": 3, "per_rung": [1, 1]}
    config = SearchConfig.create(trials=4, max_untrained=10)
    assert stop_reason(config, counts, None) == "wait"  # 3 done + 1 running fill the 4 slots
    assert stop_reason(config, {**counts, "running": 0}, None) is None
    assert stop_reason(config, {**counts, "trainings": 4}, None) == "4 proxy trainings done"
    assert stop_reason(config, {**counts, "running": 0}, deadline=0.0) == "timeout reached"
    assert stop_reason(config, {**counts, "running": 0, "untrained": 10}, None).startswith("guard: 10 samples")


def test_parse_duration():
    assert parse_duration("900") == 900 and parse_duration("15m") == 900 and parse_duration("1.5h") == 5400
    assert parse_duration(30) == 30.0 and parse_duration(None) is None
    for bad in ("soon", "0", "-5m", float("inf")):
        with pytest.raises(UserError, match="timeout"):
            parse_duration(bad)


@pytest.mark.parametrize("name, kind", [("tpe", optuna.samplers.TPESampler), ("nsga2", optuna.samplers.NSGAIISampler),
                                        ("nsga3", optuna.samplers.NSGAIIISampler),
                                        ("random", optuna.samplers.RandomSampler), ("gp", optuna.samplers.GPSampler)])
def test_make_sampler(name, kind):
    assert isinstance(make_sampler(name, 0, 10), kind)


def test_make_sampler_refuses_an_unknown_name():
    with pytest.raises(ValueError, match="unknown sampler 'cmaes'"):
        make_sampler("cmaes", 0, 10)


def test_recover_interrupted_completes_recorded_trials_and_requeues_the_rest(tmp_path):
    config = SearchConfig.create(space="cvt13-nas", budget="4G", out=str(tmp_path))
    study = optuna.create_study(study_name=config.name, storage=open_storage(None, tmp_path),
                                directions=config.directions)
    recorded = study.ask({"x": optuna.distributions.IntDistribution(0, 9)})
    for key, value in {"status": "trained", "phase": "done", "accuracy": 50.0, "macs": 3e9}.items():
        recorded.set_user_attr(key, value)
    half = study.ask({"x": optuna.distributions.IntDistribution(0, 9)})
    half.set_user_attr("phase", "training")
    unsampled = study.ask()  # killed before sampling: nothing to replay
    assert recover_interrupted(config, tmp_path) == {"completed": 1, "requeued": 1}
    trials = study.get_trials(deepcopy=False)
    assert trials[recorded.number].state.name == "COMPLETE" and trials[recorded.number].values == [50.0,
                                                                                                    pytest.approx(3.0)]
    assert trials[half.number].user_attrs["status"] == "interrupted"
    assert trials[unsampled.number].state.name == "FAIL"
    queued = [t for t in trials if t.state.name == "WAITING"]
    assert len(queued) == 1 and queued[0].system_attrs["fixed_params"] == {"x": half.params["x"]}
    assert recover_interrupted(config, tmp_path) == {"completed": 0, "requeued": 0}  # nothing left to settle


def test_a_training_stored_but_not_marked_done_is_completed_not_retrained(tmp_path):
    from nas.search._records import TRAINING_KEYS, training_attrs
    from nas.proxy import ProxyResult

    result = ProxyResult(55.0, 56.0, 2, 10, [{"accuracy": 50.0}, {"accuracy": 55.0}], False, 3.0, 100.0, 1000, "cpu", 1)
    assert tuple(training_attrs(result)) == TRAINING_KEYS
    config = SearchConfig.create(space="cvt13-nas", budget="4G", out=str(tmp_path))
    study = optuna.create_study(study_name=config.name, storage=open_storage(None, tmp_path),
                                directions=config.directions)
    stored, partial = (study.ask({"x": optuna.distributions.IntDistribution(0, 9)}) for _ in range(2))
    for trial, attrs in ((stored, training_attrs(result)), (partial, {"accuracy": 40.0})):  # killed mid-write
        for key, value in {"phase": "training", "macs": 3e9, **attrs}.items():
            trial.set_user_attr(key, value)
    assert recover_interrupted(config, tmp_path) == {"completed": 1, "requeued": 1}
    trials = study.get_trials(deepcopy=False)
    assert trials[stored.number].state.name == "COMPLETE" and trials[stored.number].values[0] == 55.0
    assert trials[stored.number].user_attrs["status"] == "trained"
    assert trials[partial.number].user_attrs["status"] == "interrupted"
