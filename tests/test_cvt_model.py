"""The CvT model: shapes, paths that must agree, per-block configs, init, presets, MACs and timm."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import cvt
import cvt.cvt as cvt_model
from cvt import CvT, CvTConfig
from nas.cost import count_macs, count_params

# A three-stage CvT small enough to run in milliseconds, with a cls token in the last stage as in CvT-13.
TINY = CvTConfig(embed_dims=(16, 32, 48), num_heads=(1, 2, 3), depths=(1, 2, 2), drop_path_rate=(0.0, 0.0, 0.1))
PRESET_PARAMS = {"cvt_13": 19_997_480, "cvt_13_384": 19_997_480, "cvt_21": 31_622_696,
                 "cvt_21_384": 31_622_696, "cvt_w24": 277_196_392, "cvt_w24_384": 277_196_392}


def _model(config: CvTConfig = TINY, num_classes: int = 10, seed: int = 0) -> CvT:
    """A model in eval mode whose biases, norms and BatchNorm statistics are not their init values, so
    that every term (folded BatchNorms, scaled biases) shows in the outputs."""
    torch.manual_seed(seed)
    model = CvT(config, num_classes=num_classes)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.LayerNorm, nn.BatchNorm2d)) and m.bias is not None:
                m.bias.normal_(0.0, 0.1)
            if isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
                m.weight.normal_(1.0, 0.2)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


# ---------------------------------------------------------------------------- shapes

@pytest.mark.parametrize("batch,size", [(1, 32), (3, 48), (2, 64), (1, 96)])
@pytest.mark.parametrize("cls_token", [(False, False, True), (False, False, False)])
def test_output_shapes(batch, size, cls_token):
    model = _model(TINY.replace(cls_token=cls_token))
    assert model(torch.randn(batch, 3, size, size)).shape == (batch, 10)
    if batch > 1:  # training-mode BatchNorm needs more than one value per channel
        assert model.train()(torch.randn(batch, 3, size, size)).shape == (batch, 10)


def test_non_square_input_and_features_only():
    model = _model(num_classes=0)
    assert model(torch.randn(2, 3, 48, 80)).shape == (2, 48)
    model.reset_classifier(7)
    assert model(torch.randn(1, 3, 48, 80)).shape == (1, 7)


def test_mean_pool_head_without_cls_token():
    model = _model(TINY.replace(cls_token=(False, False, False)))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        tokens = x
        for stage in model.stages:
            tokens, cls = stage(tokens)
        assert cls is None
        expected = model.head(model.norm(tokens.flatten(2).transpose(1, 2)).mean(dim=1))
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------- paths that must agree

def _grads(model: CvT, x: torch.Tensor) -> torch.Tensor:
    """All parameter gradients of one training step (same drop-path draws every call)."""
    model.train().zero_grad()
    torch.manual_seed(1)
    model(x).square().sum().backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def test_sdpa_equals_plain_attention():
    model = _model().set_fast_path(False)  # SDPA in every block, however few its keys
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        fused = model(x)
        plain = model.set_fused_attention(False)(x)
    assert (fused - plain).abs().max() <= 1e-5
    torch.testing.assert_close(_grads(model.set_fused_attention(True), x),
                               _grads(model.set_fused_attention(False), x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
@pytest.mark.parametrize("methods", [("dw_bn",) * 3, ("avg", "linear", "dw_bn")])
def test_fast_path_equals_plain_ops(act, methods, monkeypatch):
    """BN folding, oneDNN linears (fused activations at inference), batch slices sharing folded weights and
    matmul attention for few keys only change rounding."""
    monkeypatch.setattr(cvt_model, "_CPU_SLICE_TOKENS", 600)  # 1 image per slice at 96x96 (576 tokens)
    calls = []
    onednn = cvt_model._onednn_linear
    monkeypatch.setattr(cvt_model, "_onednn_linear", lambda *a, **k: calls.append(a[3:4]) or onednn(*a, **k))
    sdpa_keys = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda q, k, v, **kw: sdpa_keys.append(k.shape[-2]) or sdpa(q, k, v, **kw))
    model = _model(TINY.replace(act_layer=act, qkv_proj_method=methods))
    x = torch.randn(3, 3, 96, 96)  # stage 0 has 144 keys; stage 2 has 10
    with torch.no_grad():
        fast = model(x)
        # Both attention paths ran: the fused kernel for the long key sequences only, matmuls for the rest.
        assert 0 < len(sdpa_keys) < len(x) * sum(TINY.depths)
        assert min(sdpa_keys) > cvt_model._CPU_SHORT_KEYS
        assert all(m.folded is None for m in model.modules() if hasattr(m, "folded"))  # nothing kept stale
        plain = model.set_fast_path(False)(x)
    assert (fast - plain).abs().max() <= 1e-5
    if cvt_model._HAS_ONEDNN_LINEAR:  # the fast path really ran, with the activation fused
        assert ("swish" if act == "quick_gelu" else "gelu",) in calls
    # Training (oneDNN linears with their own backward): the same gradients.
    torch.testing.assert_close(_grads(model.set_fast_path(True), x), _grads(model.set_fast_path(False), x),
                               atol=1e-5, rtol=1e-4)


def test_eval_with_gradients_and_autocast():
    model = _model()
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    model(x).sum().backward()  # eval mode with autograd (zero-cost proxies do this)
    assert x.grad is not None and model.head.weight.grad is not None
    grad, = torch.autograd.grad(model(x).square().sum(), model.head.weight, create_graph=True)
    grad.sum().backward()  # second order (GraSP-like scores) works through the oneDNN linears
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(x)
    assert low.dtype == torch.bfloat16
    with torch.no_grad():
        assert (low.float() - model(x)).abs().max() < 0.1


# ---------------------------------------------------------------------------- structure

def _block(model: CvT, stage: int, index: int) -> cvt_model.CvTBlock:
    return getattr(model, f"stage{stage}").blocks[index]


@pytest.mark.parametrize("method", ["dw_bn", "avg", "linear"])
def test_projection_methods(method):
    config = TINY.replace(qkv_proj_method=(method,) * 3)
    model = _model(config)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    attn = _block(model, 2, 0).attn
    dim, k = 48, 3
    if method == "dw_bn":
        for name in ("q", "k", "v"):
            proj = getattr(attn, f"conv_proj_{name}")
            assert proj.conv.weight.shape == (dim, 1, k, k) and proj.conv.bias is None
            assert proj.bn.weight.shape == (dim,)
        assert attn.conv_proj_q.conv.stride == (1, 1) and attn.conv_proj_k.conv.stride == (2, 2)
    elif method == "avg":
        assert attn.conv_proj_q is None
        assert isinstance(attn.conv_proj_k, nn.AvgPool2d) and attn.conv_proj_k.ceil_mode
    else:
        assert attn.conv_proj_q is attn.conv_proj_k is attn.conv_proj_v is None
    conv_params = sum(p.numel() for n, p in attn.named_parameters() if n.startswith("conv_proj"))
    assert conv_params == (3 * (dim * k * k + 2 * dim) if method == "dw_bn" else 0)
    assert attn.proj_q.weight.shape == attn.proj.weight.shape == (dim, dim)


def test_per_block_config_builds_per_block_blocks():
    config = TINY.replace(depths=(1, 2, 3), num_heads=(1, (1, 2), (3, 1, 6)),
                          mlp_ratio=(4.0, (2.0, 4.0), (1.0, 2.5, 4.0)), stride_kv=(2, (1, 2), (2, 1, 2)))
    model = _model(config)
    for stage in range(3):
        for j, spec in enumerate(config.blocks(stage)):
            block = _block(model, stage, j)
            assert block.attn.num_heads == spec.num_heads
            assert block.mlp.fc1.out_features == int(spec.dim * spec.mlp_ratio)
            assert block.attn.conv_proj_k.conv.stride == (spec.stride_kv,) * 2
            assert block.attn.conv_proj_q.conv.stride == (1, 1)
    # The strides reach the forward: K/V token counts per block (stage 2 grid 4x4 at 64x64, cls in front).
    seen = {}

    def record(key):
        def hook(module, inputs, output):
            seen[key] = inputs[0].shape[1]
        return hook

    for j in range(3):
        attn = _block(model, 2, j).attn
        attn.proj_k.register_forward_hook(record(("k", j)))
        attn.proj_q.register_forward_hook(record(("q", j)))
    model(torch.randn(1, 3, 64, 64))
    assert [seen[("k", j)] for j in range(3)] == [1 + 4, 1 + 16, 1 + 4]
    assert [seen[("q", j)] for j in range(3)] == [1 + 16] * 3


def test_drop_path_schedule_per_stage():
    config = TINY.replace(depths=(1, 3, 5), drop_path_rate=(0.0, 0.2, 0.3))
    model = _model(config)
    for stage, rate in enumerate(config.drop_path_rate):
        depth = config.depths[stage]
        expected = torch.linspace(0, rate, depth).tolist() if depth > 1 else [0.0]
        got = [b.drop_path.p for b in getattr(model, f"stage{stage}").blocks]
        assert got == pytest.approx(expected)


def test_drop_path_drops_whole_samples_of_the_branch():
    drop = cvt_model.DropPath(0.5).train()
    residual, branch = torch.randn(64, 5, 3), torch.randn(64, 5, 3)
    out = drop(residual, branch)
    kept = torch.isclose(out, residual + 2 * branch).all(dim=(1, 2))  # kept samples are scaled by 1 / (1 - p)
    dropped = torch.isclose(out, residual).all(dim=(1, 2))
    assert (kept | dropped).all() and kept.any() and dropped.any()
    assert torch.equal(drop.eval()(residual, branch), residual + branch)


def test_activation_default_and_option():
    assert isinstance(_block(_model(), 0, 0).mlp.act, cvt_model.QuickGELU)
    assert isinstance(_block(_model(TINY.replace(act_layer="gelu")), 0, 0).mlp.act, nn.GELU)
    x = torch.randn(100)
    torch.testing.assert_close(cvt_model.QuickGELU()(x), x * torch.sigmoid(1.702 * x))


def test_reference_init():
    model = CvT(CvTConfig(), num_classes=1000)  # CvT-13: large layers give tight statistics
    fc1 = model.stage2.blocks[0].mlp.fc1
    assert fc1.weight.std().item() == pytest.approx(0.02, rel=0.02)
    assert fc1.weight.abs().max() <= 2.0  # trunc-normal
    for m in model.modules():
        if isinstance(m, nn.Linear):
            assert torch.count_nonzero(m.bias) == 0
        if isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    assert model.stage2.cls_token.std().item() == pytest.approx(0.02, rel=0.25)
    conv = model.stage0.patch_embed.proj  # PyTorch's default (kaiming-uniform) bound, not 0.02
    assert conv.weight.abs().max() <= 1 / (3 * 7 * 7) ** 0.5 + 1e-6
    assert conv.weight.std().item() > 0.04


# ---------------------------------------------------------------------------- presets, counts, timm

@pytest.mark.parametrize("name", sorted(PRESET_PARAMS))
def test_preset_params(name):
    assert count_params(cvt.preset(name)) == PRESET_PARAMS[name]


def test_state_dict_sizes():
    sizes = {}
    for name in ("cvt_13", "cvt_21", "cvt_w24"):
        with torch.device("meta"):
            sizes[name] = len(CvT(cvt.preset(name)).state_dict())
    assert sizes == {"cvt_13": 459, "cvt_21": 731, "cvt_w24": 833}


def _macs(name: str, resolution: int | None = None) -> int:
    with torch.device("meta"):  # weights do not change MACs: allocate them without initialising
        model = CvT(cvt.preset(name))
    return count_macs(model.to_empty(device="cpu"), resolution)


@pytest.mark.parametrize("name,resolution,ours,paper", [
    ("cvt_13", 224, 4.566e9, 4.53e9),
    ("cvt_21", 224, 7.178e9, 7.13e9),
    ("cvt_w24", 224, 60.917e9, 60.86e9),
    ("cvt_13_384", 384, 16.269e9, 16.3e9),
])
def test_macs_match_the_paper(name, resolution, ours, paper):
    macs = _macs(name, resolution)
    assert abs(macs - ours) <= 0.01e9
    assert abs(macs - paper) <= 0.01 * paper


@pytest.mark.parametrize("name", sorted(PRESET_PARAMS))
def test_timm_create_model(name):
    import timm

    with torch.device("meta"):  # W24 has 277M parameters: build without allocating
        model = timm.create_model(name, num_classes=5, in_chans=1, drop_path_rate=0.2)
    assert isinstance(model, CvT) and model.num_classes == 5
    assert model.config == cvt.preset(name).replace(in_chans=1, drop_path_rate=(0.0, 0.0, 0.2))
    assert model.stage0.patch_embed.proj.weight.shape[1] == 1
    assert model.stage2.blocks[-1].drop_path.p == pytest.approx(0.2)
    assert model.pretrained_cfg["input_size"] == (3, cvt.preset(name).img_size, cvt.preset(name).img_size)


def test_timm_create_model_runs_and_takes_a_config(tmp_path):
    import timm

    model = timm.create_model("cvt_13", num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 3)
    per_block = TINY.replace(stride_kv=(2, (1, 2), 1), mlp_ratio=(4.0, 2.0, (2.0, 4.0)))
    per_block.to_yaml(tmp_path / "arch.yaml")
    from_yaml = timm.create_model("cvt_13", config=tmp_path / "arch.yaml", num_classes=4)
    from_object = timm.create_model("cvt_13", config=per_block, num_classes=4)
    assert from_yaml.config == from_object.config == per_block
    assert from_yaml(torch.randn(1, 3, 32, 32)).shape == (1, 4)
