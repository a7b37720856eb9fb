"""Cost model: analytic MACs/params against fvcore, the latency protocol and the latency predictor.

The analytic counter is checked against the fvcore tracer on every preset and on random members of
every space. Tracing costs about 0.2-0.6 s per model on the CI machine, so the default run traces
``CVT_NAS_MAC_MEMBERS`` (8) members per space; ``CVT_NAS_MAC_MEMBERS=200`` runs the issue's full
200-member check (also printed by ``benchmarks/cost_model.py``).
"""
import itertools
import json
import math
import os

import numpy as np
import pytest
import torch
from torch import nn

import cvt
from cvt import CvTConfig, UserError
from nas.cost import (LatencyPredictor, analytic_macs, analytic_params, count_macs, count_params, device_available,
                      macs_breakdown, measure_latency)
from nas.cost._latency import LatencyResult
from nas.devices import available_cpus
from nas.latency import main as latency_main
from nas.cli import run_main
from search_spaces import CvTSpace, StageOptions, get_space, list_spaces

MEMBERS = int(os.environ.get("CVT_NAS_MAC_MEMBERS", "8"))
TINY = CvTConfig(depths=(1, 1, 1), embed_dims=(16, 32, 64), num_heads=(1, 2, 4))


@pytest.fixture(autouse=True)
def _one_thread():
    """Tracing runs real forwards; one thread avoids OpenMP spinning when the CPU is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _traced(config, resolution: int) -> int:
    """fvcore MACs of a model built without weight init (meta, then uninitialised CPU memory)."""
    with torch.device("meta"):
        model = cvt.build_model(config)
    return count_macs(model.to_empty(device="cpu"), resolution)


# ---------------------------------------------------------------------------- analytic counts
@pytest.mark.parametrize("name, resolution", [("cvt_13", 224), ("cvt_21", 224), ("cvt_13_384", 384)])
def test_analytic_equals_fvcore_on_presets_at_their_resolution(name, resolution):
    config = cvt.preset(name)
    assert analytic_macs(config) == pytest.approx(count_macs(config), rel=1e-3)
    assert analytic_params(config) == count_params(config)


def test_analytic_equals_fvcore_on_every_preset_at_64():
    # The *_384 presets are the same architectures as their 224 versions.
    for name, config in {c.arch_id(): (n, c) for n, c in cvt.CVT_PRESETS.items()}.values():
        assert analytic_macs(config, 64) == pytest.approx(_traced(config, 64), rel=1e-3), name
        assert analytic_params(config) == count_params(config), name


def test_analytic_equals_fvcore_on_cct_presets():
    for name in ("cct_2_3x2_32", "cct_7_3x1_32", "cct_7_3x2_32_sine", "vit_lite_7_4_32", "compact_vit_7_4_32",
                 "cct_14_7x2_224"):
        config = cvt.preset(name)
        for convention in ("paper", "conv_linear"):
            assert analytic_macs(config, convention=convention) == pytest.approx(
                count_macs(config, convention=convention), rel=1e-3), (name, convention)
        assert analytic_params(config) == count_params(config), name
    # Another resolution than the position embedding was made for (it is resized, not counted).
    config = cvt.preset("cct_7_3x1_32")
    assert analytic_macs(config, 48) == pytest.approx(_traced(config, 48), rel=1e-3)


def test_known_totals():
    # shared/reference/cvt.md: the paper's convention, verified with the reference code.
    assert analytic_params(cvt.preset("cvt_13")) == 19_997_480
    assert analytic_params(cvt.preset("cvt_21")) == 31_622_696
    assert analytic_params(cvt.preset("cvt_w24")) == 277_196_392
    assert round(analytic_macs(cvt.preset("cvt_w24")) / 1e9, 3) == 60.917
    assert round(analytic_macs(cvt.preset("cvt_13").replace(stride_kv=(1, 1, 1))) / 1e9, 3) == 6.643
    parts = {k: round(v / 1e6, 1) for k, v in macs_breakdown(cvt.preset("cvt_13")).items()}
    assert parts == {"conv_embed": 246.3, "dw_conv": 16.9, "qkv": 543.9, "attention": 508.4,
                     "attn_proj": 361.1, "mlp": 2889.1, "head": 0.4}
    # shared/reference/cct.md: the authors' README convention (conv + linear) and params, 10 classes.
    cct7 = cvt.preset("cct_7_3x1_32")
    assert round(analytic_macs(cct7, num_classes=10, convention="conv_linear") / 1e9, 3) == 0.947
    assert round(analytic_params(cct7, num_classes=10) / 1e6, 2) == 3.76


@pytest.mark.parametrize("name", [n for n in ("cvt13-nas", "cvt", "cct") if n in list_spaces()])
def test_analytic_equals_fvcore_on_random_members(name):
    space = get_space(name)
    rng = np.random.default_rng(0)
    for _ in range(MEMBERS):
        config = space.sample_config(rng)
        assert analytic_macs(config, 32) == pytest.approx(_traced(config, 32), rel=1e-3)
        assert analytic_params(config) == count_params(config)


def test_analytic_other_projections_and_heads():
    # avg pooling (ceil mode), no conv projection, cls tokens outside the last stage, odd sizes, no head.
    config = cvt.preset("cvt_13").replace(
        qkv_proj_method=("avg", "linear", "dw_bn"), stride_kv=(3, (1, 2), 2), kernel_qkv=(5, 3, 3),
        padding_kv=(2, 1, 1), cls_token=(True, False, False), mlp_ratio=((2.0,), 3.0, 4.0), in_chans=1)
    for resolution, classes in ((70, 0), (97, 10)):
        assert analytic_macs(config, resolution, classes) == pytest.approx(
            count_macs(config, resolution, num_classes=classes), rel=1e-3)
        assert analytic_params(config, classes) == count_params(config, num_classes=classes)


def test_analytic_rejects_unknown_configs():
    with pytest.raises(UserError, match="no analytic cost model for dict"):
        analytic_macs({})
    with pytest.raises(UserError, match="unknown MAC convention"):
        analytic_macs(TINY, convention="flops")


# ---------------------------------------------------------------------------- latency protocol
def test_latency_protocol_and_cache(tmp_path):
    kw = dict(resolution=32, warmup=2, repeats=7, threads=1, cache_dir=tmp_path)
    first = measure_latency(TINY, **kw)
    assert math.isfinite(first.median_ms) and first.median_ms > 0 and first.iqr_ms >= 0
    assert first.repeats == len(first.samples_ms) == 7 and not first.cached
    assert first.arch_id == TINY.arch_id()
    sig = first.signature
    assert sig["device"] == "cpu" and sig["cpu_model"] and sig["torch"] == torch.__version__ and sig["threads"] == 1
    assert first.settings["threads"] == 1 and first.settings["resolution"] == 32
    second = measure_latency(TINY, **kw)
    assert second.cached and second.median_ms == first.median_ms and second.samples_ms == first.samples_ms
    other = measure_latency(TINY, **{**kw, "batch_size": 2})  # other settings: another cache entry
    assert not other.cached
    assert not measure_latency(TINY, **kw, use_cache=False).cached
    assert LatencyResult.from_dict(json.loads(json.dumps(first.to_dict()))) == first


def test_latency_dtypes_channels_last_and_modules(tmp_path):
    kw = dict(resolution=32, warmup=1, repeats=3, threads=1, cache_dir=tmp_path)
    assert measure_latency(TINY, dtype="bf16", channels_last=True, **kw).median_ms > 0
    module = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten())
    result = measure_latency(module, **kw)
    assert result.arch_id is None and not measure_latency(module, **kw).cached  # no config: never cached
    assert module[0].weight.dtype == torch.float32  # the caller's module is not touched


def test_latency_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CVT_NAS_CACHE", str(tmp_path))
    measure_latency(TINY, resolution=32, warmup=1, repeats=3, threads=1)
    assert list((tmp_path / "latency").glob(f"{TINY.arch_id()}-*.json"))


def test_latency_device_and_settings_errors(tmp_path):
    assert device_available("cpu")
    with pytest.raises(UserError, match="'cuda:7' is not available"):
        measure_latency(TINY, device="cuda:7", cache_dir=tmp_path)
    with pytest.raises(UserError, match="'tpu' is not understood"):
        measure_latency(TINY, device="tpu", cache_dir=tmp_path)
    with pytest.raises(UserError, match="dtype 'int8'"):
        measure_latency(TINY, dtype="int8", cache_dir=tmp_path)
    with pytest.raises(UserError, match="repeats"):
        measure_latency(TINY, repeats=0, cache_dir=tmp_path)
    with pytest.raises(UserError, match="threads=1"):
        measure_latency(TINY, clock="cpu", threads=2, cache_dir=tmp_path)


def test_latency_cpu_clock(tmp_path):
    kw = dict(resolution=32, warmup=1, repeats=3, threads=1, cache_dir=tmp_path)
    result = measure_latency(TINY, clock="cpu", **kw)
    assert result.median_ms > 0 and result.settings["clock"] == "cpu"
    assert not measure_latency(TINY, **kw).cached  # the wall clock is another setting


# ---------------------------------------------------------------------------- predictor
def _tiny_space() -> CvTSpace:
    return CvTSpace("tiny", (
        StageOptions(depth=(1, 2), embed_dim=16, num_heads=1, patch_size=7, patch_stride=4, kv_stride=(1, 2),
                     mlp_ratio=(2, 4)),
        StageOptions(depth=1, embed_dim=(32, 64), num_heads=(1, 2), cls_token=True)), img_size=32)


def test_predictor_round_trip(tmp_path):
    space = _tiny_space()
    lines = []
    predictor = LatencyPredictor.build(space, threads=1, fit=4, holdout=4, coverage=100, warmup=1, repeats=3,
                                       model_warmup=1, model_repeats=3, cache_dir=tmp_path / "cache",
                                       progress=lines.append)
    assert lines and predictor.space == "tiny" and predictor.settings["resolution"] == 32
    report = predictor.report
    assert report["holdout"]["n"] == 4 and 0 <= report["holdout"]["within_10pct"] <= 1
    assert -1 <= report["holdout"]["kendall_tau"] <= 1
    assert report["entries"] == report["distinct_operators"] and report["table_coverage"] == 1.0
    # Every member of the space is covered by measured operators.
    members = [space.decode(dict(zip((p.name for p in space.params), values)))
               for values in itertools.product(*(p.values for p in space.params))]
    assert all(predictor.coverage(c) == 1.0 for c in members)
    path = predictor.save(tmp_path / "table.json")
    loaded = LatencyPredictor.load(path)
    for config in members[:10]:
        assert loaded.predict(config) == predictor.predict(config)
        assert loaded.table_sum(config) > 0
    # The CLI reads it back.
    assert latency_main(["report", str(path)]) == 0


def test_predictor_fallback_for_unmeasured_operators(tmp_path):
    space = _tiny_space()
    predictor = LatencyPredictor.build(space, threads=1, fit=3, holdout=3, coverage=50, max_entries=6, warmup=1,
                                       repeats=2, model_warmup=1, model_repeats=2, cache_dir=tmp_path)
    assert predictor.report["entries"] == 6 < predictor.report["distinct_operators"]
    config = space.sample_config(7)
    assert predictor.coverage(config) < 1.0 or predictor.report["table_coverage"] < 1.0
    assert predictor.predict(config) > 0


def test_predictor_load_errors(tmp_path):
    with pytest.raises(UserError, match="cannot read latency table"):
        LatencyPredictor.load(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(UserError, match="is not JSON"):
        LatencyPredictor.load(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("{}")
    with pytest.raises(UserError, match="not a cvt-nas latency table"):
        LatencyPredictor.load(tmp_path / "y.json")


def test_latency_cli(tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    TINY.replace(img_size=32).to_yaml(path)
    args = ["measure", "--config", str(path), "--threads", "1", "--repeats", "3", "--warmup", "1",
            "--cache-dir", str(tmp_path)]
    assert run_main(latency_main, args) == 0
    assert "ms median" in capsys.readouterr().out
    assert run_main(latency_main, args + ["--json"]) == 0
    assert json.loads(capsys.readouterr().out)["arch_id"] == TINY.arch_id()
    assert run_main(latency_main, ["measure", "--preset", "cvt_13", "--device", "cuda:7"]) == 2
    assert "cuda:7" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        latency_main(["measure", "--preset", "cvt_13", "--resolution", "0"])
    assert exit_.value.code == 2 and "'0' is not an integer >= 1" in capsys.readouterr().err
    # Any family's YAML: a CCT config file measures too.
    cct = tmp_path / "cct.yaml"
    cvt.preset("cct_2_3x2_32").to_yaml(cct)
    assert run_main(latency_main, ["measure", "--config", str(cct), *args[3:]]) == 0
    assert "ms median" in capsys.readouterr().out


def test_latency_warns_when_other_processes_share_the_cpus(tmp_path, capsys, monkeypatch):
    import nas._contention as contention

    monkeypatch.setattr(contention, "busy_processes", lambda interval=0.5: [contention.BusyProcess(7, "make", 1.0)])
    path = tmp_path / "tiny.yaml"
    TINY.replace(img_size=32).to_yaml(path)
    args = ["measure", "--config", str(path), "--repeats", "3", "--warmup", "1", "--cache-dir", str(tmp_path)]
    assert run_main(latency_main, [*args, "--threads", str(available_cpus())]) == 0
    err = capsys.readouterr().err
    assert "warning: the CPUs are shared: make (pid 7, 100% of a CPU)" in err and "--clock cpu --threads 1" in err
    assert run_main(latency_main, [*args, "--threads", "1", "--clock", "cpu", "--no-cache"]) == 0
    assert "warning" not in capsys.readouterr().err  # CPU time is what a busy machine leaves intact
