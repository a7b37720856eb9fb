"""``python -m nas.export``: reference-format configs with provenance, from a real (tiny) search."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import cvt  # noqa: F401  (torchvision fix before timm)
from cvt import CvTConfig
from nas import export
from nas.cli import run_main
from nas.cost import analytic_macs, analytic_params
from nas.search import SearchConfig, run_search

from conftest import TINY_SPACE

PROXY = {"epochs": 1, "train_subset": 64, "val_subset": 32, "batch_size": 32}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CVT_NAS_CACHE", str(root / "cache"))
        mp.setenv("CVT_NAS_OFFLINE", "1")
        run_search(SearchConfig.create(space=str(TINY_SPACE), budget="4.5MFLOPs", trials=4, data="synthetic",
                                       proxy=PROXY, threads=1, out=str(root / "run"), seed=1))
    return root / "run"


def rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def cli(argv, capsys):
    try:
        code = run_main(export.main, argv)
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def test_pareto_export_is_reference_yaml_with_provenance(run_dir, tmp_path, capsys):
    import timm
    import torch

    code, out, err = cli([str(run_dir), "--pareto", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    paths = [Path(p) for p in out.split()]
    front = {r["number"]: r for r in csv.DictReader(open(run_dir / "pareto.csv"))}
    assert paths and len(paths) == len(front)
    for path in paths:
        assert path.parent == tmp_path and path.name.startswith("tiny-cvt-space-4.5mflops-t") and path.suffix == ".yaml"
        number = str(int(path.stem.rsplit("-t", 1)[1]))
        row = front[number]
        text = path.read_text()
        header = [line for line in text.splitlines() if line.startswith("#")]
        for needle in (f"trial {number} of study tiny-cvt-space-4.5mflops", "space ", "sampler tpe", "seed 1",
                       f"MACs: {int(row['macs']) / 1e9:.4f} G at 64x64", f"params: {int(row['params']) / 1e6:.4f} M",
                       "latency: not measured", f"proxy accuracy: {float(row['accuracy']):.2f}%",
                       "proxy settings: epochs=1", "dataset: synthetic", "cvt-nas 0.1.0", "budgets: "):
            assert any(needle in line for line in header), (needle, header)
        assert "MODEL:" in text and "SPEC:" in text
        config = CvTConfig.from_yaml(path)
        assert config.arch_id() == row["arch_id"] and config.img_size == 64
        assert analytic_macs(config, 64) == int(row["macs"]) <= 4.5e6
        assert analytic_params(config) == int(row["params"])
        model = timm.create_model("cvt_13", config=str(path), num_classes=3).eval()
        with torch.no_grad():
            assert model(torch.randn(2, 3, 64, 64)).shape == (2, 3)


def test_top_k_json(run_dir, tmp_path, capsys):
    code, out, err = cli([str(run_dir), "--top", "2", "--format", "json", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    paths = [Path(p) for p in out.split()]
    trained = sorted((r for r in rows(run_dir) if r["status"] == "trained"), key=lambda r: -float(r["accuracy"]))
    assert len(paths) == min(2, len({r["arch_id"] for r in trained}))
    data = json.loads(paths[0].read_text())
    config = CvTConfig.from_dict(data)
    assert data["NAS"]["proxy_accuracy"] == float(trained[0]["accuracy"])
    assert data["NAS"]["arch_id"] == config.arch_id() and data["NAS"]["sampler"] == "tpe"
    assert data["NAS"]["dataset"]["name"] == "synthetic" and data["NAS"]["proxy"]["epochs"] == 1


def test_single_trial_and_its_errors(run_dir, tmp_path, capsys):
    table = rows(run_dir)
    trained = next(r for r in table if r["status"] == "trained")
    code, out, err = cli([str(run_dir), "--trial", trained["number"], "--out", str(tmp_path)], capsys)
    assert code == 0 and out.strip().endswith(f"-t{int(trained['number']):03d}.yaml")
    over = [r for r in table if r["status"] == "over_budget"]
    if over:
        code, _, err = cli([str(run_dir), "--trial", over[0]["number"]], capsys)
        assert code == 2 and "was not trained within budget (status over_budget)" in err
    code, _, err = cli([str(run_dir), "--trial", "9999"], capsys)
    assert code == 2 and "has no trial 9999" in err


def test_search_writes_its_own_exports(run_dir):
    pareto = sorted(p.name for p in (run_dir / "exports" / "pareto").iterdir())
    best = [p.name for p in (run_dir / "exports" / "best").iterdir()]
    assert pareto and len(best) == 1 and best[0] in pareto


def test_export_onto_a_file_is_one_line_exit_2(run_dir, tmp_path, capsys):
    (tmp_path / "afile").write_text("mine\n")
    code, _, err = cli([str(run_dir), "--out", str(tmp_path / "afile")], capsys)
    assert code == 2 and err.startswith("error: --out") and "a file is in the way" in err and err.count("\n") == 1
    assert (tmp_path / "afile").read_text() == "mine\n"


def test_bad_runs_are_one_line_exit_2(tmp_path, capsys):
    code, _, err = cli([str(tmp_path / "nothing")], capsys)
    assert code == 2 and "does not exist" in err
    (tmp_path / "foreign").mkdir()
    code, _, err = cli([str(tmp_path / "foreign")], capsys)
    assert code == 2 and "not a cvt-nas run directory" in err
    # A run whose search trained nothing: every sample was over budget and the guard stopped it.
    empty = tmp_path / "empty"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CVT_NAS_OFFLINE", "1")
        mp.setenv("CVT_NAS_CACHE", str(tmp_path / "cache"))
        result = run_search(SearchConfig.create(space="cvt13-nas", budget="3.125GFLOPs", trials=2, max_untrained=3,
                                                rungs="1", sampler="random", data="synthetic", proxy=PROXY,
                                                out=str(empty)))
    assert result.best is None and result.summary["trained"] == 0
    capsys.readouterr()  # the search's own log lines
    before = sorted(p.name for p in empty.iterdir())
    code, _, err = cli([str(empty)], capsys)
    assert code == 2 and err.startswith("error: the run has no trained trial to export") and err.count("\n") == 1
    assert sorted(p.name for p in empty.iterdir()) == before


_RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "results"
COMMITTED_EXPORTS = sorted([*_RESULTS.glob("*/exports/*/*.yaml"), *_RESULTS.glob("*/*/exports/*/*.yaml")])


@pytest.mark.parametrize("path", COMMITTED_EXPORTS, ids=lambda p: str(p.relative_to(_RESULTS)))
def test_committed_reference_exports_load_and_build_with_timm(path):
    import timm
    import torch

    config = CvTConfig.from_yaml(path)
    header = path.read_text().splitlines()
    # The provenance header's MACs and params are what the configs cost (1000 classes, its resolution).
    macs = next(line for line in header if line.startswith("# MACs:"))
    assert f"{analytic_macs(config, config.img_size) / 1e9:.4f} G" in macs
    model = timm.create_model("cvt_13", config=str(path), num_classes=10)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    assert sum(p.numel() for p in model.parameters()) == analytic_params(config, num_classes=10)


def test_reference_results_are_committed():
    assert len(COMMITTED_EXPORTS) >= 3  # a glob that finds nothing would pass the test above vacuously
