"""Budget parsing: the accepted forms, kinds, formatting and the errors for everything else."""
import pytest

from cvt import UserError
from nas.budget import Budget, parse_budget


@pytest.mark.parametrize("text, kind, value", [
    ("4GFLOPs", "macs", 4e9),
    ("4.1G", "macs", 4.1e9),
    ("800MFLOPs", "macs", 800e6),
    ("4.1GMACs", "macs", 4.1e9),
    ("4gflops", "macs", 4e9),
    ("4 GFLOPS", "macs", 4e9),
    ("1.5e9 MACs", "macs", 1.5e9),
    ("250kMACs", "macs", 250e3),
    ("1T", "macs", 1e12),
    ("20M params", "params", 20e6),
    ("20Mparams", "params", 20e6),
    ("300K PARAMS", "params", 300e3),
    ("2.5ms", "latency", 2.5e-3),
    ("2.5MS", "latency", 2.5e-3),
    ("400us", "latency", 400e-6),
    ("400µs", "latency", 400e-6),
    ("0.01s", "latency", 0.01),
    ("900ns", "latency", 900e-9),
])
def test_parses(text, kind, value):
    budget = parse_budget(text)
    assert budget.kind == kind
    assert budget.value == pytest.approx(value, rel=1e-12)


def test_decimal_prefixes_are_exact():
    assert parse_budget("4.1G").value == 4.1e9
    assert parse_budget("400us").value == 400e-6


def test_kind_forces_bare_counts():
    assert parse_budget("20M") == Budget("macs", 20e6)  # a bare count is MACs by default
    assert parse_budget("20M", kind="params") == Budget("params", 20e6)
    assert parse_budget("2.5ms", kind="latency").value == pytest.approx(2.5e-3)


@pytest.mark.parametrize("text, kind, message", [
    ("4GFLOPz", None, "unknown unit 'GFLOPz'"),
    ("-1G", None, "must be positive"),
    ("0", None, "must be positive"),
    ("abc", None, "does not start with a number"),
    ("", None, "empty budget"),
    ("   ", None, "empty budget"),
    ("G", None, "does not start with a number"),
    ("4 GG", None, "unknown unit"),
    ("1e999G", None, "positive finite"),
    ("2.5ms", "params", "is a latency budget, but a params budget is expected"),
    ("20M params", "macs", "is a params budget, but a macs budget is expected"),
    ("20M", "latency", "a latency is expected"),
    ("4G", "flops", "budget kind 'flops' is unknown"),
])
def test_errors(text, kind, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        parse_budget(text, kind=kind)


def test_str_and_allows():
    assert str(parse_budget("4GFLOPs")) == "4.00 GMACs"
    assert str(parse_budget("800MFLOPs")) == "0.80 GMACs"
    assert str(parse_budget("5.5MFLOPs")) == "5.5 MMACs"
    assert str(parse_budget("20M params")) == "20.0M params"
    assert str(parse_budget("2.5ms")) == "2.50 ms"
    budget = parse_budget("4.1G")
    assert budget.allows(4.1e9) and not budget.allows(4.1e9 + 1)


def test_budget_validates():
    with pytest.raises(UserError, match="kind"):
        Budget("time", 1.0)
    with pytest.raises(UserError, match="positive"):
        Budget("macs", -1)
    with pytest.raises(UserError, match="positive"):
        Budget("macs", True)
