"""CCT family (ViT-Lite, CVT, CCT): structure, params/MACs against cct.md, YAML, checkpoints, timm."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

import cvt
from cvt import CCT, CCTConfig, CheckpointError, ConfigError
from cvt.cct import SeqPool, sinusoidal_embedding
from nas.cost import count_macs, count_params

import timm  # noqa: I001  (after cvt, whose import makes torchvision loadable on CPU torch)

ROOT = Path(__file__).resolve().parents[1]

# cct.md's table: (preset, classes) -> exact params, MACs by our convention (conv + linear + attention and
# SeqPool matmuls) and by the README's (conv + linear); then the table's printed params (M), README GMACs and
# "incl. attention" GMACs. The exact integers were derived by hand from the architecture.
TABLE = {
    "cct_2_3x2_32": (10, 283_723, 35_341_568, 33_236_224, 0.284, 0.033, 0.0355),
    "cct_4_3x2_32": (10, 482_123, 50_021_632, 45_819_136, 0.482, 0.046, 0.0504),
    "cct_6_3x2_32": (10, 3_326_923, 253_463_040, 240_863_744, 3.327, 0.241, 0.2545),
    "cct_7_3x2_32": (10, 3_853_259, 289_114_624, 274_418_176, 3.853, 0.275, 0.2903),
    "cct_7_3x1_32": (10, 3_760_139, 1_181_616_640, 946_670_080, 3.760, 0.947, 1.1865),
    "cct_14_7x2_224": (1000, 22_367_273, 5_521_901_568, 5_108_777_472, 22.36, 5.11, 5.533),
    "cct_14_7x2_384": (1000, 22_513_193, 18_580_282_368, 15_012_805_632, 22.51, 15.02, 18.61),
}

# Small members of the family for tests that run real tensors.
SMALL = {
    "cct": CCTConfig(num_layers=2, num_heads=2, embed_dim=32, conv_layers=2, conv_channels=8, img_size=16),
    "cct-sine-per-layer": CCTConfig(num_layers=2, num_heads=(2, 4), mlp_ratio=(1.0, 3.0), embed_dim=32,
                                    kernel_size=5, pos_embed="sine", img_size=16),
    "vit-lite": CCTConfig(tokenizer="patch", kernel_size=4, pooling="cls", num_layers=2, embed_dim=32,
                          img_size=16),
    "cvt-no-pe": CCTConfig(tokenizer="patch", kernel_size=4, pos_embed="none", num_layers=2, embed_dim=32,
                           img_size=16),
}


def _printed_digits(value: float) -> int:
    return len(repr(value).split(".")[1])


@pytest.mark.parametrize("name", TABLE)
def test_params_and_macs_match_cct_md(name):
    classes, params, macs, readme_macs, table_params, table_readme, table_incl = TABLE[name]
    config = cvt.preset(name)
    model = CCT(config, num_classes=classes)
    assert count_params(config, num_classes=classes) == params
    assert count_macs(model) == macs
    assert count_macs(model, convention="conv_linear") == readme_macs
    # The table's params and README MACs within one unit of the last printed digit: two entries are not
    # rounded (CCT-14/7x2@224 22,367,273 printed 22.36M; CCT-7/3x2 0.2744G printed 0.275G).
    assert abs(params / 1e6 - table_params) < 10 ** -_printed_digits(table_params)
    assert abs(readme_macs / 1e9 - table_readme) < 10 ** -_printed_digits(table_readme)
    # Its "incl. attention" column also counts LayerNorm at 5 per element (fvcore's default table),
    # which our single convention (the CvT paper's) leaves out: adding that term reproduces it exactly.
    tokens, layers = config.sequence_length(), config.num_layers
    layer_norm = (2 * layers + 1) * tokens * config.embed_dim * 5
    assert abs((macs + layer_norm) / 1e9 - table_incl) < 0.5 * 10 ** -_printed_digits(table_incl)


def test_macs_at_another_resolution_use_the_resized_embedding():
    config = SMALL["cct"]  # 4x4 tokens at 16, 8x8 at 32
    assert config.sequence_length(32) == 64
    attention_and_pool = 2 * 2 * 64 * 64 * 32 + 64 * 32
    assert count_macs(config, 32, num_classes=10) - count_macs(config, 32, convention="conv_linear",
                                                              num_classes=10) == attention_and_pool


def test_vit_lite_and_cvt_params_match_the_paper():
    # Paper table: ViT-Lite-7/4 and CVT-7/4 both 3.72M at CIFAR-10.
    assert count_params(cvt.preset("vit_lite_7_4_32"), num_classes=10) == 3_716_874
    assert count_params(cvt.preset("compact_vit_7_4_32"), num_classes=10) == 3_716_619


# ---------------------------------------------------------------------------- structure

def _oracle(state: dict[str, torch.Tensor], x: torch.Tensor, cfg: CCTConfig) -> torch.Tensor:
    """The authors' forward written out with plain tensor ops on a state_dict (eval mode)."""
    for i in range(cfg.conv_layers):
        x = F.conv2d(x, state[f"tokenizer.conv_layers.{i}.0.weight"], state.get(f"tokenizer.conv_layers.{i}.0.bias"),
                     cfg.stride, cfg.padding)
        if cfg.tokenizer == "conv":
            x = F.max_pool2d(F.relu(x), 3, 2, 1)
    x = x.flatten(2).transpose(1, 2)
    if cfg.pooling == "cls":
        x = torch.cat((state["classifier.class_emb"].expand(x.shape[0], -1, -1), x), dim=1)
    if cfg.pos_embed != "none":
        x = x + state["classifier.positional_emb"]

    def norm(t, key):
        return F.layer_norm(t, t.shape[-1:], state[key + ".weight"], state[key + ".bias"])

    def linear(t, key):
        return F.linear(t, state[key + ".weight"], state.get(key + ".bias"))

    b, n, c = x.shape
    for i in range(cfg.num_layers):
        key, heads = f"classifier.blocks.{i}.", cfg.layer(i).num_heads
        q, k, v = linear(norm(x, key + "pre_norm"), key + "self_attn.qkv").reshape(b, n, 3, heads, -1).permute(
            2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) / math.sqrt(c // heads)).softmax(dim=-1)
        x = x + linear((attn @ v).transpose(1, 2).reshape(b, n, c), key + "self_attn.proj")
        x = norm(x, key + "norm1")  # the residual stream itself is normalised
        x = x + linear(F.gelu(linear(x, key + "linear1")), key + "linear2")
    x = norm(x, "classifier.norm")
    if cfg.pooling == "cls":
        x = x[:, 0]
    else:
        x = (linear(x, "classifier.attention_pool").softmax(dim=1).transpose(1, 2) @ x).squeeze(1)
    return linear(x, "classifier.fc")




@pytest.mark.parametrize("name", SMALL)
def test_forward_equals_the_authors_structure(name):
    cfg = SMALL[name]
    torch.manual_seed(0)
    model = CCT(cfg, num_classes=7).eval()
    x = torch.randn(3, cfg.in_chans, cfg.img_size, cfg.img_size)
    with torch.no_grad():
        expected = _oracle(model.state_dict(), x, cfg)
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(model.set_fused_attention(False)(x), expected, rtol=1e-4, atol=1e-5)


def test_state_dict_uses_the_authors_keys_and_shapes():
    with torch.device("meta"):
        state = CCT(cvt.preset("cct_7_3x1_32"), num_classes=10).state_dict()
        vit = CCT(cvt.preset("vit_lite_7_4_32"), num_classes=10).state_dict()
    expected = {
        "tokenizer.conv_layers.0.0.weight": (256, 3, 3, 3),
        "classifier.attention_pool.weight": (1, 256), "classifier.attention_pool.bias": (1,),
        "classifier.positional_emb": (1, 256, 256),
        "classifier.norm.weight": (256,), "classifier.norm.bias": (256,),
        "classifier.fc.weight": (10, 256), "classifier.fc.bias": (10,),
    }
    block = {"pre_norm.weight": (256,), "pre_norm.bias": (256,), "self_attn.qkv.weight": (768, 256),
             "self_attn.proj.weight": (256, 256), "self_attn.proj.bias": (256,),
             "linear1.weight": (512, 256), "linear1.bias": (512,), "norm1.weight": (256,), "norm1.bias": (256,),
             "linear2.weight": (256, 512), "linear2.bias": (256,)}
    for i in range(7):
        expected.update({f"classifier.blocks.{i}.{k}": v for k, v in block.items()})
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert vit["classifier.class_emb"].shape == (1, 1, 256) and "classifier.attention_pool.weight" not in vit
    assert vit["classifier.positional_emb"].shape == (1, 65, 256) and "tokenizer.conv_layers.0.0.bias" in vit


@pytest.mark.parametrize("name", sorted(cvt.CCT_PRESETS))
def test_every_preset_builds_and_runs(name):
    config = cvt.preset(name)
    with torch.device("meta"):  # shapes only: nothing allocated
        model = CCT(config, num_classes=10)
        tokens, grid = model.tokenizer(torch.zeros(2, 3, config.img_size, config.img_size))
        out = model(torch.zeros(2, 3, config.img_size, config.img_size))
    assert grid == config.grid_size() and tokens.shape == (2, grid[0] * grid[1], config.embed_dim)
    assert out.shape == (2, 10)


@pytest.mark.parametrize("name", SMALL)
def test_other_resolutions_and_feature_output(name):
    torch.manual_seed(0)
    model = CCT(SMALL[name], num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 24)).shape == (1, 10)  # position embedding resampled
        assert model.forward_features(torch.randn(2, 3, 16, 16)).shape == (2, 32)
    assert CCT(SMALL[name], num_classes=0)(torch.randn(1, 3, 16, 16)).shape == (1, 32)


def test_token_counts_of_the_tokenizers():
    assert cvt.preset("cct_7_3x1_32").grid_size() == (16, 16)
    assert cvt.preset("cct_7_3x2_32").sequence_length() == 64
    assert cvt.preset("cct_14_7x2_224").sequence_length() == 196
    assert (cvt.preset("cct_14_7x2_224").stride, cvt.preset("cct_14_7x2_224").padding) == (2, 3)
    assert cvt.preset("vit_lite_7_4_32").sequence_length() == 65


def test_seqpool_weights_sum_to_one_and_pool():
    torch.manual_seed(0)
    pool = SeqPool(16)
    x = torch.randn(4, 9, 16)
    weights = pool.weights(x)
    assert weights.shape == (4, 9, 1)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(4, 1))
    torch.testing.assert_close(pool(x), (weights * x).sum(dim=1))


def test_training_step_backpropagates_everywhere():
    torch.manual_seed(0)
    model = CCT(SMALL["cct"], num_classes=5).train()
    loss = F.cross_entropy(model(torch.randn(4, 3, 16, 16)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_init_follows_the_authors():
    torch.manual_seed(0)
    model = CCT(cvt.preset("cct_6_3x2_32"), num_classes=10)
    assert model.classifier.positional_emb.std().item() == pytest.approx(0.2, rel=0.05)
    assert model.classifier.blocks[0].linear1.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.classifier.blocks[0].linear1.bias.abs().max() == 0
    conv = model.tokenizer.conv_layers[1][0]
    assert conv.bias is None and conv.weight.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.05)
    assert CCT(SMALL["vit-lite"]).classifier.class_emb.abs().max() == 0
    sine = CCT(SMALL["cct-sine-per-layer"], num_classes=10)
    assert "classifier.positional_emb" in sine.state_dict()  # a buffer: kept in checkpoints, not trained
    assert all(p is not sine.classifier.positional_emb for p in sine.parameters())


def test_sine_table_is_the_authors_formula():
    length, dim = 5, 6
    angles = [[p / 10000 ** (2 * (i // 2) / dim) for i in range(dim)] for p in range(length)]
    expected = torch.tensor(angles, dtype=torch.float32)
    expected[:, 0::2], expected[:, 1::2] = expected[:, 0::2].sin(), expected[:, 1::2].cos()
    torch.testing.assert_close(sinusoidal_embedding(length, dim), expected[None], rtol=0, atol=0)


def test_drop_path_is_linspace_over_layers():
    rates = [layer.drop_path for layer in cvt.preset("cct_7_3x1_32").layers()]
    assert rates == pytest.approx([0.1 * i / 6 for i in range(7)])


# ---------------------------------------------------------------------------- checkpoints

def _trained(config: CCTConfig, num_classes: int = 10) -> CCT:
    torch.manual_seed(1)
    return CCT(config, num_classes=num_classes).eval()


def test_checkpoint_file_loads_strict(tmp_path):
    source = _trained(SMALL["cct"])
    path = tmp_path / "cct_cifar10.pth"
    torch.save(source.state_dict(), path)
    target = cvt.load_checkpoint(CCT(SMALL["cct"], num_classes=10).eval(), path)
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(target(x), source(x))


def test_position_embedding_is_resized_on_load():
    source = _trained(SMALL["cct"])  # 4x4 tokens
    target = cvt.load_checkpoint(CCT(SMALL["cct"].replace(img_size=24), num_classes=10).eval(),
                                 source.state_dict())  # 6x6 tokens
    grid = source.classifier.positional_emb.detach().reshape(1, 4, 4, 32).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(6, 6), mode="bilinear").permute(0, 2, 3, 1).reshape(1, 36, 32)
    torch.testing.assert_close(target.classifier.positional_emb.detach(), expected)
    x = torch.randn(1, 3, 24, 24)
    torch.testing.assert_close(target(x), source(x))  # same as resizing on the fly


def test_class_token_is_kept_when_resizing():
    source = _trained(SMALL["vit-lite"])
    target = cvt.load_checkpoint(CCT(SMALL["vit-lite"].replace(img_size=32), num_classes=10),
                                 source.state_dict())
    pe = target.classifier.positional_emb.detach()
    assert pe.shape == (1, 65, 32)
    torch.testing.assert_close(pe[:, :1], source.classifier.positional_emb.detach()[:, :1])


def test_sine_table_is_regenerated_on_load():
    source = _trained(SMALL["cct-sine-per-layer"])
    target = cvt.load_checkpoint(CCT(SMALL["cct-sine-per-layer"].replace(img_size=32), num_classes=10),
                                 source.state_dict())
    torch.testing.assert_close(target.classifier.positional_emb, sinusoidal_embedding(256, 32))


def test_classifier_is_replaced_for_another_class_count():
    source = _trained(SMALL["cct"])
    target = CCT(SMALL["cct"], num_classes=100)
    fresh = target.classifier.fc.weight.detach().clone()
    cvt.load_checkpoint(target, source.state_dict())
    torch.testing.assert_close(target.classifier.fc.weight.detach(), fresh)
    torch.testing.assert_close(target.classifier.blocks[1].linear1.weight, source.classifier.blocks[1].linear1.weight)
    features = cvt.load_checkpoint(CCT(SMALL["cct"], num_classes=0).eval(), source.state_dict())
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(features(x), source.forward_features(x))


def test_checkpoint_of_another_architecture_is_one_clear_error():
    shallower = CCT(SMALL["cct"].replace(num_layers=1), num_classes=10)
    with pytest.raises(CheckpointError) as err:
        cvt.load_checkpoint(shallower, _trained(SMALL["cct"]).state_dict())
    assert "unexpected keys classifier.blocks.1." in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------------------- timm

@pytest.mark.parametrize("name", sorted(cvt.CCT_PRESETS))
def test_timm_create_model_for_every_name(name):
    with torch.device("meta"):
        model = timm.create_model(name)
    assert isinstance(model, CCT) and model.config == cvt.preset(name)
    assert model.num_classes == model.pretrained_cfg["num_classes"]
    expected = 100 if "c100" in name else 102 if name.startswith("cct_7_7x2") or name.endswith("_fl") else \
        1000 if name.startswith("cct_14") else 10
    assert model.num_classes == expected


def test_timm_overrides_and_custom_configs(tmp_path):
    with torch.device("meta"):
        model = timm.create_model("cct_7_3x1_32", num_classes=3, drop_path_rate=0.2, img_size=64, in_chans=1)
    assert model.num_classes == 3 and model.config.drop_path_rate == 0.2
    assert model.config.img_size == 64 and model.config.in_chans == 1
    path = tmp_path / "tiny.yaml"
    SMALL["vit-lite"].to_yaml(path)
    assert timm.create_model("cct_7_3x1_32", config=path).config == SMALL["vit-lite"]
    assert timm.create_model("cct_2_3x2_32", config=SMALL["cct"]).config == SMALL["cct"]
    assert set(cvt.CCT_PRESETS) <= set(timm.list_models("*"))


# ---------------------------------------------------------------------------- config

@pytest.mark.parametrize("config", [cvt.preset("cct_14_7x2_384"), cvt.preset("vit_lite_7_4_32"),
                                    SMALL["cct-sine-per-layer"],
                                    CCTConfig(kernel_size=5, tokenizer_stride=2, tokenizer_padding=0)],
                         ids=["cct-14", "vit-lite", "per-layer", "explicit-stride"])
def test_yaml_round_trip(tmp_path, config):
    path = tmp_path / "arch.yaml"
    config.to_yaml(path, header="provenance", extra={"NAS": {"trial": 3}})
    text = path.read_text()
    assert text.startswith("# provenance\n") and yaml.safe_load(text)["NAS"] == {"trial": 3}
    again = CCTConfig.from_yaml(path)
    assert again == config and again.arch_id() == config.arch_id()
    assert again.to_yaml() == config.to_yaml()


def test_yaml_layout():
    data = yaml.safe_load(SMALL["cct-sine-per-layer"].to_yaml())
    assert data["MODEL"]["NAME"] == "cct" and data["TRAIN"]["IMAGE_SIZE"] == [16, 16]
    spec = data["MODEL"]["SPEC"]
    assert spec["NUM_HEADS"] == [2, 4] and spec["MLP_RATIO"] == [1.0, 3.0] and spec["POS_EMBED"] == "sine"
    assert "TOKENIZER_STRIDE" not in spec  # derived from the kernel unless set
    assert CCTConfig(mlp_ratio=2) == CCTConfig(mlp_ratio=2.0)


@pytest.mark.parametrize("path", sorted((ROOT / "experiments" / "cct").glob("*.yaml")), ids=lambda p: p.name)
def test_preset_yaml_files_match_presets(path):
    assert CCTConfig.from_yaml(path) == cvt.preset(path.stem.replace("-", "_"))


def test_every_preset_has_a_yaml_file():
    names = {p.stem.replace("-", "_") for p in (ROOT / "experiments" / "cct").glob("*.yaml")}
    assert names == set(cvt.CCT_PRESETS)


def test_arch_id_is_about_the_architecture():
    base = cvt.preset("cct_7_3x1_32")
    assert len(base.arch_id()) == 12
    assert base.replace(drop_path_rate=0.3, attn_drop_rate=0.0).arch_id() == base.arch_id()
    assert base.replace(tokenizer_stride=1, tokenizer_padding=1).arch_id() == base.arch_id()  # = derived
    assert base.replace(conv_channels=32).arch_id() == base.arch_id()  # unused with one conv layer
    assert base.replace(num_heads=8).arch_id() != base.arch_id()
    assert base.replace(img_size=64).arch_id() != base.arch_id()  # longer position embedding
    no_pe = base.replace(pos_embed="none")
    assert no_pe.replace(img_size=64).arch_id() == no_pe.arch_id()


@pytest.mark.parametrize("changes, message", [
    ({"tokenizer": "linear"}, "MODEL.SPEC.TOKENIZER = 'linear': use one of conv, patch"),
    ({"pos_embed": "rope"}, "MODEL.SPEC.POS_EMBED = 'rope': use one of learnable, sine, none"),
    ({"pooling": "mean"}, "MODEL.SPEC.POOLING = 'mean': use one of seqpool, cls"),
    ({"num_heads": 3}, "MODEL.SPEC.NUM_HEADS = 3 does not divide DIM_EMBED = 256"),
    ({"num_heads": (4, 4, 4, 4, 4, 4, 5)}, "MODEL.SPEC.NUM_HEADS[6] = 5 does not divide DIM_EMBED = 256"),
    ({"mlp_ratio": (2.0, 2.0)}, "MODEL.SPEC.MLP_RATIO has 2 per-layer values but DEPTH = 7"),
    ({"mlp_ratio": 0}, "MODEL.SPEC.MLP_RATIO = 0: expected a positive number"),
    ({"num_layers": 0}, "MODEL.SPEC.DEPTH = 0: expected an integer >= 1"),
    ({"embed_dim": 25.5}, "MODEL.SPEC.DIM_EMBED = 25.5: expected an integer >= 1"),
    ({"kernel_size": True}, "MODEL.SPEC.KERNEL_SIZE = True: expected an integer >= 1"),
    ({"tokenizer_padding": -1}, "MODEL.SPEC.TOKENIZER_PADDING = -1: expected an integer >= 0"),
    ({"drop_path_rate": 1.0}, "MODEL.SPEC.DROP_PATH_RATE = 1.0: expected a rate in [0, 1)"),
    ({"tokenizer": "patch", "conv_layers": 2}, "MODEL.SPEC.CONV_LAYERS = 2: the patch tokenizer is one convolution"),
    ({"tokenizer": "patch", "kernel_size": 5}, "TRAIN.IMAGE_SIZE = 32 is not a multiple of the patch size"),
    ({"kernel_size": 7, "tokenizer_padding": 0, "conv_layers": 3}, "input 32x32 is too small: tokenizer layer 2"),
    ({"img_size": 0}, "TRAIN.IMAGE_SIZE = 0: expected a positive integer"),
])
def test_validation_names_the_key(changes, message):
    with pytest.raises(ConfigError) as err:
        CCTConfig(**changes)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("text, message", [
    ("MODEL: [", "is not valid YAML at line"),
    ("TRAIN: {}\n", "expected a CCT config with MODEL.NAME cct and a MODEL.SPEC section"),
    ("MODEL:\n  NAME: cls_cvt\n  SPEC: {DEPTH: [1, 2, 10]}\n", "MODEL.NAME = 'cls_cvt': a CCT config has NAME cct"),
    ("MODEL:\n  SPEC:\n    LAYERS: 7\n", "unknown key(s) LAYERS"),
    ("MODEL:\n  SPEC: {DEPTH: 2}\nTRAIN:\n  IMAGE_SIZE: [32, 16]\n", "only square inputs"),
    ("MODEL:\n  SPEC: {NUM_HEADS: 5}\n", "MODEL.SPEC.NUM_HEADS = 5 does not divide"),
])
def test_bad_yaml_is_one_clear_error(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        CCTConfig.from_yaml(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_package_dispatch_and_presets():
    config = cvt.preset("cct_7_3x1_32")
    with torch.device("meta"):
        assert isinstance(config, CCTConfig) and isinstance(cvt.build_model(config, num_classes=10), CCT)
    with pytest.raises(ConfigError, match="needs a CCTConfig"):
        CCT(cvt.preset("cvt_13"))
