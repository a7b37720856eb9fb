"""CvTConfig: reference YAML round trips (per stage and per block), validation, presets."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import cvt
from cvt import CvTConfig, ConfigError

ROOT = Path(__file__).resolve().parents[1]

# A per-stage config in the reference's experiment layout, with the unrelated sections it carries.
REFERENCE_YAML = """\
OUTPUT_DIR: 'OUTPUT/'
WORKERS: 6
MODEL:
  NAME: cls_cvt
  SPEC:
    INIT: 'trunc_norm'
    NUM_STAGES: 3
    PATCH_SIZE: [7, 3, 3]
    PATCH_STRIDE: [4, 2, 2]
    PATCH_PADDING: [2, 1, 1]
    DIM_EMBED: [64, 192, 384]
    NUM_HEADS: [1, 3, 6]
    DEPTH: [1, 4, 16]
    MLP_RATIO: [4.0, 4.0, 4.0]
    ATTN_DROP_RATE: [0.0, 0.0, 0.0]
    DROP_RATE: [0.0, 0.0, 0.0]
    DROP_PATH_RATE: [0.0, 0.0, 0.1]
    QKV_BIAS: [True, True, True]
    CLS_TOKEN: [False, False, True]
    POS_EMBED: [False, False, False]
    QKV_PROJ_METHOD: ['dw_bn', 'dw_bn', 'dw_bn']
    KERNEL_QKV: [3, 3, 3]
    PADDING_KV: [1, 1, 1]
    STRIDE_KV: [2, 2, 2]
    PADDING_Q: [1, 1, 1]
    STRIDE_Q: [1, 1, 1]
DATASET:
  DATASET: 'imagenet'
TRAIN:
  BATCH_SIZE_PER_GPU: 256
  IMAGE_SIZE: [384, 384]
TEST:
  IMAGE_SIZE: [384, 384]
"""

NAS_LIKE = CvTConfig(
    stride_kv=(2, (1, 1), (2,) + (1,) * 8 + (2,)),
    mlp_ratio=((2.0,), (4.0, 4.0), (2.0,) + (4.0,) * 8 + (2.0,)),
    num_heads=(1, (3, 2), 6),
    stride_q=(1, 1, (1,) * 10),
)


def test_reference_yaml_loads_unchanged(tmp_path):
    path = tmp_path / "cvt-21-384x384.yaml"
    path.write_text(REFERENCE_YAML)
    config = CvTConfig.from_yaml(path)
    assert config == cvt.preset("cvt_21_384")
    assert not config.is_per_block


@pytest.mark.parametrize("config", [cvt.preset("cvt_13"), cvt.preset("cvt_w24_384"), NAS_LIKE],
                         ids=["per-stage", "w24-384", "per-block"])
def test_yaml_round_trip(tmp_path, config):
    path = tmp_path / "arch.yaml"
    config.to_yaml(path, header="provenance line 1\nline 2", extra={"NAS": {"trial": 3}})
    text = path.read_text()
    assert text.startswith("# provenance line 1\n# line 2\n")
    assert yaml.safe_load(text)["NAS"] == {"trial": 3}
    again = CvTConfig.from_yaml(path)
    assert again == config
    assert again.arch_id() == config.arch_id()


def test_per_block_values_are_nested_lists():
    spec = NAS_LIKE.to_spec()
    assert spec["STRIDE_KV"] == [2, [1, 1], [2, 1, 1, 1, 1, 1, 1, 1, 1, 2]]
    assert spec["MLP_RATIO"][0] == [2.0]
    assert NAS_LIKE.is_per_block
    block = NAS_LIKE.block(1, 1)
    assert (block.num_heads, block.stride_kv, block.mlp_ratio) == (2, 1, 4.0)
    assert NAS_LIKE.block(2, 9).stride_q == 1


def test_drop_path_schedule_is_per_stage_linspace():
    config = cvt.preset("cvt_13")
    rates = [b.drop_path for b in config.blocks(2)]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.1)
    assert rates == pytest.approx([0.1 * j / 9 for j in range(10)])
    assert [b.drop_path for b in config.blocks(0)] == [0.0]


def test_arch_id_ignores_regularisation_but_not_architecture():
    base = cvt.preset("cvt_13")
    assert base.replace(drop_path_rate=(0.0, 0.0, 0.3)).arch_id() == base.arch_id()
    assert base.replace(stride_kv=(1, 2, 2)).arch_id() != base.arch_id()
    assert len(base.arch_id()) == 12


@pytest.mark.parametrize("changes, message", [
    ({"depths": (1, 2)}, "MODEL.SPEC.PATCH_SIZE has 3 entries but DEPTH has 2 stages"),
    ({"num_heads": (1, 5, 6)}, "MODEL.SPEC.NUM_HEADS[1] = 5 does not divide DIM_EMBED[1] = 192"),
    ({"num_heads": (1, 3, (6,) * 9 + (7,))}, "MODEL.SPEC.NUM_HEADS[2][9] = 7 does not divide"),
    ({"stride_kv": (2, (1, 2, 1), 2)}, "MODEL.SPEC.STRIDE_KV[1] has 3 per-block values but DEPTH[1] = 2"),
    ({"mlp_ratio": (4.0, 0.0, 4.0)}, "MODEL.SPEC.MLP_RATIO[1] = 0.0: expected a positive number"),
    ({"embed_dims": (64, -192, 384)}, "MODEL.SPEC.DIM_EMBED[1] = -192: expected an integer >= 1"),
    ({"depths": (1, 0, 10)}, "MODEL.SPEC.DEPTH[1] = 0: expected an integer >= 1"),
    ({"qkv_proj_method": ("dw_bn", "conv", "dw_bn")}, "QKV_PROJ_METHOD[1] = 'conv': unknown projection method"),
    ({"drop_path_rate": (0.0, 0.0, 1.5)}, "MODEL.SPEC.DROP_PATH_RATE[2] = 1.5: expected a rate in [0, 1)"),
    ({"cls_token": (False, False, "yes")}, "MODEL.SPEC.CLS_TOKEN[2] = 'yes': expected true or false"),
    ({"act_layer": "relu"}, "MODEL.SPEC.ACT_LAYER = 'relu'"),
    ({"patch_padding": (2, -1, 1)}, "MODEL.SPEC.PATCH_PADDING[1] = -1: expected an integer >= 0"),
    ({"stride_q": (1, 1, (1,) * 9 + (2,))}, "MODEL.SPEC.STRIDE_Q[2][9] = 2: a query stride other than 1"),
])
def test_validation_names_key_and_stage(changes, message):
    with pytest.raises(ConfigError) as err:
        CvTConfig(**changes)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("text, message", [
    ("MODEL: [", "is not valid YAML at line"),
    ("TRAIN: {}\n", "expected a reference CvT config with a MODEL.SPEC section"),
    ("MODEL:\n  SPEC:\n    DEPTH: [1, 2, 10]\n    DIM_EMBEDS: [1, 2, 3]\n", "unknown key(s) DIM_EMBEDS"),
    ("MODEL:\n  SPEC:\n    DEPTH: [1, 2]\n", "defaults exist only for 3 stages"),
    ("MODEL:\n  SPEC:\n    NUM_STAGES: 2\n    DEPTH: [1, 2, 10]\n", "NUM_STAGES = 2 but DEPTH"),
    ("MODEL:\n  SPEC:\n    DEPTH: [1, 2, 10]\nTRAIN:\n  IMAGE_SIZE: [224, 192]\n", "only square inputs"),
])
def test_bad_yaml_is_one_clear_error(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        CvTConfig.from_yaml(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_missing_file_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        CvTConfig.from_yaml(tmp_path / "nope.yaml")


def test_too_small_input_is_explained():
    with pytest.raises(ConfigError, match="too small"):
        cvt.preset("cvt_13").grid_sizes(2)


@pytest.mark.parametrize("path", sorted((ROOT / "experiments" / "cvt").glob("*.yaml")), ids=lambda p: p.name)
def test_preset_yaml_files_match_presets(path):
    config = CvTConfig.from_yaml(path)
    name = path.stem.replace("-", "_").replace("_224x224", "").replace("x384", "")
    assert config == cvt.preset(name)


def test_every_preset_has_a_yaml_file():
    assert len(list((ROOT / "experiments" / "cvt").glob("*.yaml"))) == len(cvt.CVT_PRESETS)


def test_unknown_preset_lists_known_ones():
    with pytest.raises(ConfigError, match="unknown preset 'cvt_99'; known: .*cvt_13"):
        cvt.preset("cvt_99")


def _summary(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nas.summary", *args], capture_output=True, text=True, cwd=ROOT)


def test_summary_command_reports_params_and_macs():
    out = _summary("cvt_13")
    assert out.returncode == 0, out.stderr
    assert "19,997,480" in out.stdout and "4.5661G" in out.stdout


def test_summary_lists_per_block_choices_of_a_searched_architecture(tmp_path):
    path = tmp_path / "searched.yaml"
    NAS_LIKE.to_yaml(path)
    out = _summary(str(path))
    assert out.returncode == 0, out.stderr
    assert "stage 1 blocks: kv stride 1 1 | mlp ratio 4 4 | heads 3 2" in out.stdout
    assert "stage 2 blocks: kv stride 2 1 1 1 1 1 1 1 1 2 | mlp ratio 2 4 4 4 4 4 4 4 4 2" in out.stdout
    assert "blocks:" not in _summary("cvt_13").stdout


@pytest.mark.parametrize("args, message", [
    (("cvt_99",), "unknown preset 'cvt_99'"),
    (("missing.yaml",), "cannot read config missing.yaml"),
    (("cvt_13", "--resolution", "0"), "--resolution: '0' is not an integer >= 1"),
    (("cvt_13", "--num-classes", "-5"), "--num-classes: '-5' is not an integer >= 0"),
])
def test_summary_bad_input_is_one_line_exit_2(args, message):
    out = _summary(*args)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and message in out.stderr
    assert "Traceback" not in out.stderr
