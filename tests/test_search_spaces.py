"""Search spaces: valid sampling through both backends, decoding, membership, cardinality, extremes, YAML."""
import itertools
import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

import cvt
from cvt import CCTConfig, CvTConfig, UserError
from nas.cost import analytic_macs, analytic_params
from search_spaces import CvTSpace, IntRange, SearchSpace, StageOptions, get_space, list_spaces, load_space

ROOT = Path(__file__).resolve().parents[1]
SPACES = [name for name in ("cvt13-nas", "cvt", "cct") if name in list_spaces()]
NAME = re.compile(r"^stage\d+\.((depth|embed_dim|num_heads|patch_size|patch_stride|kernel_qkv|qkv_proj_method|"
                  r"cls_token)|block\d\d\.(kv_stride|mlp_ratio))$")

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _bottleneck() -> CvTConfig:
    """CvT-13-NAS as the paper describes it: stride 2 / ratio 2 at the first and last stages' ends,
    stride 1 / ratio 4 in the middle."""
    return cvt.preset("cvt_13").replace(
        stride_kv=(2, 1, (2,) + (1,) * 8 + (2,)),
        mlp_ratio=(2.0, 4.0, (2.0,) + (4.0,) * 8 + (2.0,)))


def _valid(space: SearchSpace, params: dict) -> CvTConfig | CCTConfig:
    """Decodes to a member whose parameters are the sampled ones (blocks beyond the depth dropped)."""
    config = space.decode(params)
    assert isinstance(config, {"cvt": CvTConfig, "cct": CCTConfig}[space.family])
    recovered = space.params_of(config)  # raises unless config is a member
    assert recovered == {k: v for k, v in params.items() if k in recovered}
    return config


def _tiny_space(**stage0) -> CvTSpace:
    first = {"depth": (1, 2), "embed_dim": 16, "num_heads": 1, "patch_size": 7, "patch_stride": 4,
             "kv_stride": (1, 2), "mlp_ratio": (2, 4), **stage0}
    return CvTSpace("tiny", (StageOptions(**first),
                             StageOptions(depth=1, embed_dim=(32, 64), num_heads=(1, 2), cls_token=True)),
                    img_size=32)


# ---------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("name", SPACES)
def test_optuna_random_sampler_gives_valid_members(name):
    space = get_space(name)
    for seed in range(4):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        for _ in range(50):
            trial = study.ask()
            params = space.sample(trial)
            assert params == trial.params  # every sampled value is an Optuna parameter, nothing else
            _valid(space, params)
            study.tell(trial, 0.0)


@pytest.mark.parametrize("name", SPACES)
def test_ray_tune_sampling_gives_valid_members(name):
    from ray.tune.search.variant_generator import generate_variants

    space = get_space(name)
    tune_space = space.to_tune()
    assert set(tune_space) == {p.name for p in space.params}
    for seed in range(200):
        resolved = next(generate_variants({"config": tune_space}, random_state=np.random.RandomState(seed)))[1]
        _valid(space, resolved["config"])


@pytest.mark.parametrize("name", SPACES)
def test_sampled_configs_run(name):
    # On the meta device: shapes are checked end to end (residuals, reshapes) without any compute.
    space = get_space(name)
    for seed in range(3):
        with torch.device("meta"):
            model = cvt.build_model(space.sample_config(seed), num_classes=10).eval()
            for size in (32, 224):
                assert model(torch.zeros(2, 3, size, size)).shape == (2, 10)


def test_cct_space():
    space = get_space("cct")
    assert space.family == "cct"
    assert [p.name for p in space.params] == ["num_layers", "embed_dim", "num_heads", "mlp_ratio", "kernel_size",
                                              "conv_layers", "pos_embed", "pooling"]
    assert space.cardinality() == 13 * 5 * 3 * 4 * 3 * 2 * 3 * 2
    for name in ("cct_2_3x2_32", "cct_4_3x2_32", "cct_6_3x1_32", "cct_7_3x1_32", "cct_7_3x2_32_sine"):
        assert space.contains(cvt.preset(name)), name
    assert not space.contains(cvt.preset("cct_14_7x2_224"))  # 6 heads
    assert not space.contains(cvt.preset("vit_lite_7_4_32"))  # patch tokenizer
    with pytest.raises(UserError, match="holds CCT configs"):
        space.params_of(cvt.preset("cvt_13"))
    lo, hi = space.extremes(lambda c: analytic_macs(c, 32))
    assert analytic_macs(lo) < analytic_macs(cvt.preset("cct_7_3x1_32")) < analytic_macs(hi)


def test_cct_yaml_space(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: my-cct\nfamily: cct\noptions:\n  num_layers: {low: 2, high: 4}\n"
                    "  embed_dim: [128, 256]\n  num_heads: [2, 4]\n  pooling: cls\n")
    space = get_space(str(path))
    assert space.cardinality() == 3 * 2 * 2
    assert space.sample_config(0).pooling == "cls" and space.sample_config(0).kernel_size == 3
    path.write_text("name: my-cct\nfamily: cct\noptions: {layers: 3}\n")
    with pytest.raises(UserError, match="unknown key.*layers.*known: num_layers"):
        get_space(str(path))
    path.write_text("name: my-cct\nfamily: cct\noptions: {embed_dim: 100, num_heads: 8}\n")
    with pytest.raises(UserError, match="8 does not divide embed_dim 100"):
        get_space(str(path))


def test_flat_names_and_define_by_run():
    space = get_space("cvt")
    assert all(NAME.match(p.name) for p in space.params)
    params = space.sample_params(3)
    # Per-block dimensions exist exactly up to each sampled depth.
    for i in range(3):
        depth = params[f"stage{i}.depth"]
        blocks = {int(k.split(".")[1][5:]) for k in params if k.startswith(f"stage{i}.block")}
        assert blocks == set(range(depth))
    assert "stage2.block07.kv_stride" in {p.name for p in get_space("cvt13-nas").params}


def test_int_range_bounds_are_inclusive_in_both_backends():
    from ray.tune.search.sample import Integer

    space = get_space("cvt")
    depth = next(p for p in space.params if p.name == "stage2.depth")
    assert isinstance(depth, IntRange) and (depth.low, depth.high) == (4, 16)
    domain = space.to_tune()["stage2.depth"]
    assert isinstance(domain, Integer)
    drawn = {domain.sample(random_state=np.random.RandomState(s)) for s in range(400)}
    assert drawn == set(range(4, 17))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = {depth.suggest(study.ask()) for _ in range(400)}
    assert drawn == set(range(4, 17))


def test_ray_optuna_search_accepts_define_by_run():
    from ray.tune.search.optuna import OptunaSearch

    space = get_space("cvt13-nas")
    sample = pickle.loads(pickle.dumps(space.sample))  # Tune pickles the searcher with its space function
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        searcher = OptunaSearch(space=sample, metric="acc", mode="max",
                                sampler=optuna.samplers.RandomSampler(seed=0))
        config = searcher.suggest("trial_1")
    _valid(space, config)


# ---------------------------------------------------------------------------- decoding and membership
def test_presets_and_bottleneck_are_members():
    nas, general = get_space("cvt13-nas"), get_space("cvt")
    for config in (cvt.preset("cvt_13"), cvt.preset("cvt_13_384"), _bottleneck()):
        assert nas.contains(config) and general.contains(config)
    assert general.contains(cvt.preset("cvt_21")) and not nas.contains(cvt.preset("cvt_21"))
    assert not general.contains(cvt.preset("cvt_w24"))
    # Decoding a member's parameters gives the member back (per-block lists collapse when uniform).
    assert general.decode(general.params_of(cvt.preset("cvt_21"))) == cvt.preset("cvt_21")
    assert nas.decode(nas.params_of(_bottleneck())) == _bottleneck()


def test_cvt13_nas_is_inside_cvt():
    nas, general = get_space("cvt13-nas"), get_space("cvt")
    rng = np.random.default_rng(0)
    assert all(general.contains(nas.sample_config(rng)) for _ in range(50))


def test_non_members_name_the_difference():
    space = get_space("cvt13-nas")
    with pytest.raises(UserError, match="stage1.depth is 4, the space fixes it to 2"):
        space.params_of(cvt.preset("cvt_21"))
    with pytest.raises(UserError, match="PATCH_PADDING"):
        space.params_of(cvt.preset("cvt_13").replace(patch_padding=(3, 1, 1)))
    with pytest.raises(UserError, match="1.0"):
        space.params_of(cvt.preset("cvt_13").replace(mlp_ratio=(1.0, 4.0, 4.0)))
    # Training-only settings and the input are not part of the architecture.
    assert space.contains(cvt.preset("cvt_13").replace(drop_path_rate=(0.0, 0.0, 0.3), in_chans=1, img_size=32))


def test_decode_errors():
    space = get_space("cvt13-nas")
    params = space.sample_params(0)
    with pytest.raises(UserError, match="no dimension"):
        space.decode({**params, "stage9.depth": 3})
    assert space.decode({**params, "lr": 0.1}, ignore_unknown=True) == space.decode(params)
    with pytest.raises(UserError, match="not in this search space"):
        space.decode({**params, "stage1.block00.kv_stride": 3})
    missing = dict(params)
    del missing["stage2.block09.mlp_ratio"]
    with pytest.raises(UserError, match="lack stage2.block09.mlp_ratio"):
        space.decode(missing)
    with pytest.raises(UserError, match="fixed"):
        space.decode({**params, "stage2.depth": 16})
    assert space.decode({**params, "stage2.depth": 10}) == space.decode(params)  # a constant at its value


def test_decode_ignores_blocks_beyond_the_depth():
    space = get_space("cvt")
    tune_like = {p.name: p.values[-1] for p in space.params}  # every block up to the largest depth
    tune_like["stage2.depth"] = 5
    config = space.decode(tune_like)
    assert config.depths[2] == 5
    assert np.int64(2) == space.decode({**tune_like, "stage0.block00.kv_stride": np.int64(2)}).stride_kv[0]


def test_encode_and_arch_id():
    space = get_space("cvt")
    a, b = space.sample_config(0), space.sample_config(1)
    va = space.encode(a)
    assert va.shape == (len(space.params),) == (len(space.feature_names()),)
    assert va.dtype == np.float64
    np.testing.assert_array_equal(va, space.encode(a))
    assert not np.array_equal(va, space.encode(b))
    assert space.arch_id(a) == a.arch_id() and len(space.arch_id(a)) == 12
    with pytest.raises(UserError, match="not in space"):
        space.encode(cvt.preset("cvt_w24"))


# ---------------------------------------------------------------------------- counting
def test_cvt13_nas_cardinality():
    space = get_space("cvt13-nas")
    assert space.cardinality() == 2 ** 26
    assert len(space.params) == 26


def test_cardinality_matches_enumeration():
    space = _tiny_space()
    seen = set()
    for values in itertools.product(*(p.values for p in space.params)):
        seen.add(space.decode(dict(zip((p.name for p in space.params), values))).arch_id())
    assert space.cardinality() == len(seen) == (4 + 16) * 2 * 2


def test_cvt13_nas_extremes():
    smallest, largest = get_space("cvt13-nas").extremes(lambda c: analytic_macs(c, 224))
    assert round(analytic_params(smallest) / 1e6, 2) == 13.78
    assert round(analytic_params(largest) / 1e6, 2) == 20.00
    assert round(analytic_macs(smallest) / 1e9, 2) == 3.12
    assert round(analytic_macs(largest) / 1e9, 2) == 6.64
    assert set(smallest.stride_kv) == {2} and set(smallest.mlp_ratio) == {2.0}
    assert set(largest.stride_kv) == {1} and set(largest.mlp_ratio) == {4.0}
    lo, hi = get_space("cvt13-nas").extremes(analytic_params)
    assert analytic_params(lo) == analytic_params(smallest) and analytic_params(hi) == analytic_params(largest)


def test_cvt_extremes_bound_random_members():
    space = get_space("cvt")
    for resolution in (32, 224):
        def macs(c, resolution=resolution):
            return analytic_macs(c, resolution)

        lo, hi = (macs(c) for c in space.extremes(macs))
        rng = np.random.default_rng(resolution)
        for _ in range(200):
            assert lo <= analytic_macs(space.sample_config(rng), resolution) <= hi


# ---------------------------------------------------------------------------- lookup and YAML
def test_get_space():
    assert get_space("cvt13-nas") is get_space("cvt13-nas")
    assert get_space("cvt").family == "cvt"
    with pytest.raises(UserError, match="unknown search space 'nope'.*cvt13-nas"):
        get_space("nope")
    with pytest.raises(UserError, match="not found"):
        get_space("missing/space.yaml")


def test_example_yaml_space():
    path = ROOT / "experiments" / "spaces" / "example.yaml"
    space = get_space(str(path))
    assert space.name == "cvt-small"
    assert space.contains(space.sample_config(0))
    assert space.cardinality() > 1
    config = space.decode(space.sample(optuna.create_study().ask()))
    assert isinstance(config, CvTConfig)


def test_yaml_ranges_and_defaults(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: r\nstages:\n  - {depth: {low: 1, high: 3}, embed_dim: 64, num_heads: 1}\n"
                    "  - {depth: 2, embed_dim: [96, 192], num_heads: [1, 3], mlp_ratio: [2, 4]}\n")
    space = load_space(path)
    assert space.cardinality() == 3 * 2 * 2 * 2 ** 2
    config = space.sample_config(0)
    assert config.patch_size == (7, 3) and config.cls_token == (False, True)  # CvT-13 stem, cls at the end


@pytest.mark.parametrize("text, message", [
    ("[1, 2]", "is a mapping"),
    ("name: x\nstages: [{depth: 1, embed_dim: 64}]", r"stages\[0\] lacks num_heads"),
    ("name: x\nstages: [{depth: 1, embed_dim: 64, num_heads: 1, heads: 2}]", "unknown key.*heads"),
    ("name: x\nstages: [{depth: 1, embed_dim: [64, 96], num_heads: [1, 5]}]", "5 does not divide embed_dim 64"),
    ("name: x\nstages: [{depth: [], embed_dim: 64, num_heads: 1}]", "empty list"),
    ("name: x\nstages: [{depth: {low: 3, high: 1}, embed_dim: 64, num_heads: 1}]", "low <= high"),
    ("name: x\nstages: [{depth: {min: 1}, embed_dim: 64, num_heads: 1}]", "low: 1, high: 4"),
    ("name: x\nstages: [{depth: 0, embed_dim: 64, num_heads: 1}]", r"depth: 0 is not an integer >= 1"),
    ("name: x\nstages: [{depth: 1, embed_dim: 64, num_heads: 1, kernel_qkv: 4}]", "kernel_qkv: 4 is even"),
    ("name: x\nstages: [{depth: 1, embed_dim: 64, num_heads: 1, qkv_proj_method: conv}]", "not one of dw_bn"),
    ("name: x\nstages: [{depth: 1, embed_dim: 64, num_heads: 1, mlp_ratio: [2, -1]}]", "not a positive number"),
    ("name: x\nimg_size: 2\nstages: [{depth: 1, embed_dim: 64, num_heads: 1, patch_size: 9}]", "empty token grid"),
    ("name: x\nstages: []", "non-empty list"),
    ("stages: [{depth: 1, embed_dim: 64, num_heads: 1}]", "give the space a 'name'"),
    ("name: x\nfamily: vit\nstages: []", "unknown family 'vit'"),
    ("name: x\nlayers: 3", "unknown key"),
    ("name: x\nstages: [{depth: 1, embed_dim: 64\n", "not valid YAML at line"),
])
def test_bad_yaml_spaces(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as info:
        get_space(str(path))
    assert str(path) in str(info.value)  # every message names the file
