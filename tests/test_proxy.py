"""nas.proxy: settings, seeded training on the synthetic task, failures, callbacks, training-free scores."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import cvt
from cvt import UserError
from nas.data import load_dataset
from nas.proxy import (GPU_DEFAULTS, ProxyConfig, RungSchedule, TrainingFailed, proxy_model_config, scale_width,
                       train_proxy, train_rung, zero_cost)

TINY_CVT = cvt.CvTConfig(depths=(1, 1, 1), embed_dims=(16, 32, 64), num_heads=(1, 2, 4),
                         drop_path_rate=(0.0, 0.0, 0.1))
TINY_CCT = cvt.CCTConfig(num_layers=1, num_heads=2, mlp_ratio=1.0, embed_dim=32)
QUICK = ProxyConfig(epochs=2, train_subset=256, val_subset=128, batch_size=32, threads=1)


@pytest.fixture(scope="module")
def synthetic():
    return load_dataset("synthetic")


# ---------------------------------------------------------------------------- settings

def test_proxy_config_round_trip_and_defaults():
    proxy = ProxyConfig(classes=[0, 2], steps=10)
    assert proxy.classes == (0, 2)
    assert ProxyConfig.from_dict(proxy.to_dict()) == proxy
    assert proxy.to_dict()["classes"] == [0, 2]
    gpu = ProxyConfig.for_device("cuda", epochs=3)
    assert gpu.device == "cuda" and gpu.epochs == 3 and gpu.batch_size == GPU_DEFAULTS["batch_size"]
    assert ProxyConfig.for_device("cpu") == ProxyConfig(device="cpu")


@pytest.mark.parametrize("changes, message", [
    ({"epochs": 0}, "proxy epochs = 0: expected an integer >= 1"),
    ({"steps": 2.5}, "proxy steps = 2.5: expected an integer >= 1 or null"),
    ({"lr": -1.0}, r"proxy lr = -1.0: expected a number > 0"),
    ({"width_mult": float("nan")}, "proxy width_mult = nan"),
    ({"label_smoothing": 1.0}, r"label_smoothing = 1.0: expected a value in \[0, 1\)"),
    ({"classes": 1}, "class count >= 2"),
    ({"batch_size": True}, "proxy batch_size = True"),
])
def test_proxy_config_rejects_bad_values(changes, message):
    with pytest.raises(UserError, match=message):
        ProxyConfig(**changes)


def test_proxy_config_unknown_key():
    with pytest.raises(UserError, match="unknown proxy setting.*epoch_count.*known: amp"):
        ProxyConfig.from_dict({"epoch_count": 3})


def test_width_multiplier_keeps_heads_dividing_widths():
    per_block = cvt.CvTConfig(depths=(1, 2, 2), embed_dims=(64, 192, 384), num_heads=(1, (3, 2), 6))
    half = scale_width(per_block, 0.5)
    assert half.embed_dims == (32, 96, 192)  # stage 2: multiple of lcm(3, 2) = 6
    assert scale_width(per_block, 0.3).embed_dims == (19, 60, 114)  # nearest multiples: 57.6 -> 60
    assert scale_width(TINY_CCT, 0.5).embed_dim == 16
    trained = proxy_model_config(per_block, ProxyConfig(width_mult=0.5, resolution=48), in_chans=1)
    assert trained.in_chans == 1 and trained.embed_dims == (32, 96, 192)
    assert proxy_model_config(TINY_CCT, ProxyConfig(resolution=48), in_chans=3).img_size == 48


# ---------------------------------------------------------------------------- training

def test_seeded_training_learns_and_reproduces(synthetic):
    rng_before, threads_before = torch.get_rng_state(), torch.get_num_threads()
    np_before = np.random.get_state()[1].copy()
    first = train_proxy(TINY_CVT, synthetic, QUICK)
    second = train_proxy(TINY_CVT, synthetic, QUICK)
    assert first.accuracy > 60.0  # 4 classes: chance is 25%
    assert first.accuracy == second.accuracy and first.history[-1]["train_loss"] == second.history[-1]["train_loss"]
    assert first.epochs_completed == 2 and first.steps_completed == 2 * (256 // 32) and not first.stopped_early
    assert first.dataset["train_size"] == 256 and first.dataset["val_size"] == 128
    assert first.proxy == QUICK.to_dict() and first.threads == 1 and first.train_images_per_s > 0
    other = train_proxy(TINY_CVT, synthetic, QUICK.replace(seed=1))
    assert other.history[0]["train_loss"] != first.history[0]["train_loss"]
    # The caller's random streams and thread count are left as they were.
    assert torch.equal(torch.get_rng_state(), rng_before) and torch.get_num_threads() == threads_before
    assert np.array_equal(np.random.get_state()[1], np_before)


def test_mixup_cutmix_cct_and_step_budget(synthetic):
    proxy = QUICK.replace(mixup=0.8, cutmix=1.0, steps=5, classes=3, batch_size=31)
    np_before = np.random.get_state()[1].copy()
    a, b = train_proxy(TINY_CCT, synthetic, proxy), train_proxy(TINY_CCT, synthetic, proxy)
    assert a.accuracy == b.accuracy and a.steps_completed == 5 and a.epochs_completed == 1
    assert a.dataset["num_classes"] == 3
    assert np.array_equal(np.random.get_state()[1], np_before)  # Mixup drew from its own stream


def test_one_channel_small_images_and_width(monkeypatch):
    digits = load_dataset("digits")
    result = train_proxy(TINY_CVT, digits, QUICK.replace(resolution=16, width_mult=0.5, epochs=1))
    assert result.dataset["in_chans"] == 1 and result.dataset["image_size"] == 16
    assert result.num_params < sum(p.numel() for p in cvt.build_model(TINY_CVT.replace(in_chans=1), 10).parameters())


def test_report_callback_stops_training(synthetic):
    calls = []

    def report(epoch, accuracy):
        calls.append((epoch, accuracy))
        return epoch == 2

    result = train_proxy(TINY_CVT, synthetic, QUICK.replace(epochs=4), report=report)
    assert result.stopped_early and result.epochs_completed == 2 and len(calls) == 2
    assert [h["accuracy"] for h in result.history] == [acc for _, acc in calls]

    class Pruned(Exception):
        pass

    def prune(epoch, accuracy):
        raise Pruned

    with pytest.raises(Pruned):
        train_proxy(TINY_CVT, synthetic, QUICK, report=prune)


class Faulty(nn.Module):
    """A small model that fails on its ``fail_at``-th forward pass in training."""

    def __init__(self, error: Exception | None, fail_at: int = 3):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 4))
        self.error, self.fail_at, self.calls = error, fail_at, 0

    def forward(self, x):
        self.calls += self.training
        out = self.net(x)
        if self.training and self.calls == self.fail_at:
            if self.error is None:
                return out * float("nan")
            raise self.error
        return out


def test_divergence_stops_at_once(synthetic):
    with pytest.raises(TrainingFailed, match=r"loss = nan at epoch 1, step 2 .*lower the learning rate") as info:
        train_proxy(Faulty(None), synthetic, QUICK)
    assert info.value.kind == "diverged" and (info.value.epoch, info.value.step) == (1, 2)
    with pytest.raises(TrainingFailed, match="training diverged: loss = (nan|inf)") as info:
        train_proxy(TINY_CVT, synthetic, QUICK.replace(lr=1e6, warmup_epochs=0))
    assert info.value.kind == "diverged"


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
                                   RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9e9 bytes")])
def test_out_of_memory_is_a_training_failure(synthetic, error):
    with pytest.raises(TrainingFailed, match=r"out of memory at epoch 1, step 2 \(batch 32, 32px, cpu\)") as info:
        train_proxy(Faulty(error), synthetic, QUICK)
    assert info.value.kind == "out_of_memory"


def test_other_errors_propagate_and_bad_settings(synthetic, monkeypatch):
    with pytest.raises(RuntimeError, match="mismatch"):
        train_proxy(Faulty(RuntimeError("shape mismatch")), synthetic, QUICK)
    with pytest.raises(UserError, match="width_mult applies to model configs only"):
        train_proxy(Faulty(None), synthetic, QUICK.replace(width_mult=0.5))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="proxy device 'cuda' is not available: this machine has no CUDA GPU"):
        train_proxy(TINY_CVT, synthetic, QUICK.replace(device="cuda"))


# ---------------------------------------------------------------------------- training-free scores

@pytest.mark.parametrize("name", sorted(zero_cost.SCORES))
@pytest.mark.parametrize("config", [TINY_CVT, TINY_CCT], ids=["cvt", "cct"])
def test_zero_cost_scores(synthetic, name, config):
    proxy = ProxyConfig(threads=1)
    value = zero_cost.score(name, config, synthetic, proxy, batch_size=16)
    assert math.isfinite(value) and value == zero_cost.score(name, config, synthetic, proxy, batch_size=16)


def test_zero_cost_functions_leave_the_model_alone(synthetic):
    torch.manual_seed(0)
    model = cvt.build_model(TINY_CVT, num_classes=4).eval()
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "batches" not in k}
    x = torch.randn(8, 3, 32, 32)
    y = torch.arange(8) % 4
    for fn in zero_cost.SCORES.values():
        fn(model, x, y)
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert not model.training and all(p.grad is None for p in model.parameters())
    # Identical images share every activation pattern: NASWOT's kernel is singular.
    assert math.isfinite(zero_cost.naswot(model, x))
    assert zero_cost.naswot(model, x[:1].expand(8, -1, -1, -1)) == -math.inf


def test_zero_cost_bad_input(synthetic):
    with pytest.raises(UserError, match="unknown training-free score 'snip'; use one of naswot"):
        zero_cost.score("snip", TINY_CVT, synthetic)
    with pytest.raises(UserError, match="naswot needs activation modules"):
        zero_cost.naswot(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), torch.randn(4, 3, 2, 2))


class _ToyAttention(nn.Module):  # named like the models' attention modules, which DSS looks for
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4, bias=False)

    def forward(self, x):
        return self.proj(x)


def test_dss_scores_attention_by_nuclear_norms_and_other_linears_by_saliency():
    torch.manual_seed(0)
    model = nn.Sequential(_ToyAttention(), nn.Linear(4, 2, bias=False))
    a, h = (m.weight.detach().abs().double() for m in (model[0].proj, model[1]))
    x = torch.ones(4, dtype=torch.float64)
    grad_a = torch.outer(h.sum(0), x)  # R = 1^T h a x
    grad_h = torch.outer(torch.ones(2, dtype=torch.float64), a @ x)
    expected = (torch.linalg.matrix_norm(grad_a, "nuc") * torch.linalg.matrix_norm(a, "nuc")
                + (h * grad_h).abs().sum())
    assert zero_cost.dss(model, torch.zeros(3, 4)) == pytest.approx(math.log10(float(expected)))


def test_checkpoint_resumes_a_killed_training_bit_for_bit(synthetic, tmp_path):
    settings = ProxyConfig(epochs=3, train_subset=256, val_subset=128, threads=1, mixup=0.2)
    whole = train_proxy(TINY_CVT, synthetic, settings)

    class Killed(Exception):
        pass

    def kill_in_epoch_two(epoch, accuracy):
        if epoch == 2:
            raise Killed

    path = tmp_path / "run.pt"
    with pytest.raises(Killed):
        train_proxy(TINY_CVT, synthetic, settings, checkpoint=path, report=kill_in_epoch_two)
    assert [h["epoch"] for h in torch.load(path, weights_only=False)["history"]] == [1]  # epoch 2 was lost
    resumed = train_proxy(TINY_CVT, synthetic, settings, checkpoint=path)
    assert [h["accuracy"] for h in resumed.history] == [h["accuracy"] for h in whole.history]
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in whole.history]
    # A finished checkpoint returns its result without training; other settings are refused.
    calls = []
    again = train_proxy(TINY_CVT, synthetic, settings, checkpoint=path, report=lambda e, a: calls.append(e))
    assert again.accuracy == whole.accuracy and calls == []
    with pytest.raises(UserError, match="other settings"):
        train_proxy(TINY_CVT, synthetic, settings.replace(lr=2e-3), checkpoint=path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable proxy checkpoint"):
        train_proxy(TINY_CVT, synthetic, settings, checkpoint=path)


def test_rungs_continue_the_lower_rung_with_more_data(synthetic, tmp_path):
    base = ProxyConfig(epochs=2, train_subset=128, val_subset=64, threads=1)
    schedule = RungSchedule((1, 2, 4))
    up = schedule.settings(base, 2)
    assert (up.train_subset, up.val_subset, up.steps) == (512, 256, 2 * (2 * (128 // 64)))
    assert 0 < up.warmup_epochs < 1
    epochs = RungSchedule((1, 3), growth="epochs").settings(base, 1)
    assert (epochs.train_subset, epochs.epochs, epochs.val_subset) == (128, 4, 192)
    first = train_rung(TINY_CVT, synthetic, base, schedule, 0, tmp_path)
    assert first.accuracy == train_proxy(TINY_CVT, synthetic, base).accuracy  # rung 0 is the plain proxy
    second = train_rung(TINY_CVT, synthetic, base, schedule, 1, tmp_path)
    assert second.steps_completed == schedule.settings(base, 1).steps
    # A rung whose lower checkpoint is gone trains the lower rung again first, to the same result.
    climbed = train_rung(TINY_CVT, synthetic, base, schedule, 1, tmp_path / "fresh")
    assert sorted(p.name for p in (tmp_path / "fresh").iterdir()) == ["rung-0.pt", "rung-1.pt"]
    assert [(h["accuracy"], h["train_loss"]) for h in climbed.history] == \
        [(h["accuracy"], h["train_loss"]) for h in second.history]
    # Continuing differs from a fresh training of the same settings: the weights carried over.
    fresh = train_proxy(TINY_CVT, synthetic, schedule.settings(base, 1))
    assert second.history[0]["train_loss"] < fresh.history[0]["train_loss"]


@pytest.mark.parametrize("multiples, growth, message", [
    ((2, 4), "data", "starting at 1"), ((1, 1), "data", "increasing"), ((1, 2), "width", "growth"),
])
def test_rung_schedule_rejects_bad_values(multiples, growth, message):
    with pytest.raises(UserError, match=message):
        RungSchedule(multiples, growth=growth)
