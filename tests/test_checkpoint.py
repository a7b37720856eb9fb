"""Checkpoints: reference-key files load strictly; HF transformers' CvT converts with equal logits."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import cvt
from cvt import CheckpointError, CvT, CvTConfig

# HF transformers indexes its per-block drop-path list by stage, so it needs depths[i] > i.
SMALL = CvTConfig(embed_dims=(16, 32, 48), num_heads=(1, 2, 3), depths=(1, 2, 3))


def _randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random values in every parameter and BatchNorm statistic, so no key can load by accident."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            elif tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.2)
    return model.eval()


# ---------------------------------------------------------------------------- reference keys

@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_reference_keys_load_strictly_with_identical_logits(tmp_path, suffix):
    source = _randomize(CvT(SMALL, num_classes=10), seed=0)
    path = tmp_path / f"ckpt{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(source.state_dict(), str(path))
    else:
        torch.save(source.state_dict(), path)
    target = _randomize(CvT(SMALL, num_classes=10), seed=1)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert not torch.equal(target(x), source(x))
        cvt.load_checkpoint(target, path)
        assert torch.equal(target(x), source(x))


def test_training_containers_and_data_parallel_prefix_are_unwrapped(tmp_path):
    source = _randomize(CvT(SMALL, num_classes=10), seed=0)
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": {f"module.{k}": v for k, v in source.state_dict().items()}, "epoch": 3}, path)
    target = cvt.load_checkpoint(CvT(SMALL, num_classes=10).eval(), path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(target(x), source(x))


# ---------------------------------------------------------------------------- HF transformers

def _hf_model(config: CvTConfig, num_classes: int, seed: int) -> nn.Module:
    from transformers import CvtConfig as HFConfig, CvtForImageClassification

    hf_config = HFConfig(
        num_channels=config.in_chans, patch_sizes=list(config.patch_size), patch_stride=list(config.patch_stride),
        patch_padding=list(config.patch_padding), embed_dim=list(config.embed_dims),
        num_heads=list(config.num_heads), depth=list(config.depths), mlp_ratio=list(config.mlp_ratio),
        drop_path_rate=list(config.drop_path_rate), cls_token=list(config.cls_token),
        qkv_bias=list(config.qkv_bias), stride_kv=list(config.stride_kv), padding_kv=list(config.padding_kv),
        kernel_qkv=list(config.kernel_qkv), num_labels=num_classes)
    torch.manual_seed(seed)
    return _randomize(CvtForImageClassification(hf_config), seed)


@pytest.mark.parametrize("config,size", [
    (SMALL, 64),
    # (HF's mean-pool head, without a cls token, fails in transformers 5.23 itself: not compared.)
    (SMALL.replace(stride_kv=(1, 2, 1), mlp_ratio=(2.0, 4.0, 3.0)), 48),
    (cvt.preset("cvt_13"), 112),  # every CvT-13 weight shape (the resolution only sets token counts)
])
def test_hf_transformers_checkpoint_gives_the_same_logits(config, size):
    hf = _hf_model(config, num_classes=10, seed=0)
    ours = CvT(config.replace(act_layer="gelu"), num_classes=10).eval()  # HF uses exact GELU
    cvt.load_checkpoint(ours, hf.state_dict())
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = hf(pixel_values=x).logits
        assert (ours(x) - expected).abs().max() <= 1e-5
        assert (ours.set_fast_path(False)(x) - expected).abs().max() <= 1e-5


def test_hf_keys_map_one_to_one():
    from transformers import CvtConfig as HFConfig, CvtForImageClassification

    with torch.device("meta"):
        hf = CvtForImageClassification(HFConfig(num_labels=1000))
        ours = CvT(cvt.preset("cvt_13"))
    mapped = ours.checkpoint_filter(hf.state_dict())
    assert sorted(mapped) == sorted(ours.state_dict())
    assert ours.checkpoint_filter(ours.state_dict()).keys() == ours.state_dict().keys()


# ---------------------------------------------------------------------------- errors

def _one_line_error(model: nn.Module, source) -> str:
    with pytest.raises(CheckpointError) as info:
        cvt.load_checkpoint(model, source)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_wrong_shapes_missing_and_unexpected_keys_are_listed():
    model = CvT(SMALL, num_classes=10)
    state = CvT(SMALL, num_classes=5).state_dict()  # head has 5 outputs
    del state["stage2.cls_token"]
    state["stage9.extra.weight"] = torch.zeros(1)
    message = _one_line_error(model, state)
    assert "head.weight (5, 48) vs model (10, 48)" in message
    assert "missing keys stage2.cls_token" in message
    assert "unexpected keys stage9.extra.weight" in message


def test_non_strict_load_still_checks_shapes():
    model = CvT(SMALL, num_classes=10)
    partial = {k: v for k, v in CvT(SMALL, num_classes=10).state_dict().items() if k.startswith("stage0.")}
    cvt.load_checkpoint(model, partial, strict=False)
    partial["stage0.patch_embed.proj.bias"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"wrong shape for stage0\.patch_embed\.proj\.bias \(3,\)"):
        cvt.load_checkpoint(model, partial, strict=False)


@pytest.mark.parametrize("name,content", [
    ("garbage.pth", b"this is not a checkpoint"),
    ("garbage.safetensors", b"\x00\x01not safetensors"),
    ("empty.pth", b""),
])
def test_corrupt_file_is_a_checkpoint_error(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    assert str(path) in _one_line_error(CvT(SMALL, num_classes=10), path)


def test_missing_file_and_non_tensor_content(tmp_path):
    assert "does not exist" in _one_line_error(CvT(SMALL), tmp_path / "nope.pth")
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    assert "no state_dict" in _one_line_error(CvT(SMALL), path)
