"""``train_proxy``: a short, seeded training of one candidate, evaluated after every epoch.

The recipe shortens the CIFAR recipe of the CCT authors (Hassani et al. 2021, their CIFAR configs): AdamW (timm),
linear warm-up then cosine decay per step, label smoothing, optional Mixup/CutMix (timm), random crop
with padding and horizontal flip done on batches of uint8 tensors. No DataLoader: the data already lives
in memory, and one ``torch.Generator`` per run makes batch order and augmentation reproducible.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import timm.loss
import timm.optim
import timm.scheduler
import torch
from timm.data import Mixup

from cvt import UserError

from .._paths import atomic_path, read_saved
from ..data import Dataset
from ..devices import resolve_device
from ._config import ProxyConfig
from ._setup import build_proxy_model, normalize, seeded_run, select_data

__all__ = ["train_proxy", "ProxyResult", "TrainingFailed", "ReportFn", "augment"]

logger = logging.getLogger(__name__)

ReportFn = Callable[[int, float], "bool | None"]


class TrainingFailed(RuntimeError):
    """A proxy training that could not finish: the loss diverged, or the device ran out of memory.

    Attributes:
        reason: one line saying what happened and where (epoch, step), for the trial record.
        kind: ``"diverged"`` or ``"out_of_memory"`` (``"failed"`` when not given).
        epoch, step: where it happened (1-based epoch, 0-based global step), when known.
    """

    def __init__(self, reason: str, *, kind: str = "failed", epoch: int | None = None, step: int | None = None):
        super().__init__(reason)
        self.reason, self.kind, self.epoch, self.step = reason, kind, epoch, step


@dataclass
class ProxyResult:
    """What a proxy training measured.

    Attributes:
        accuracy: top-1 validation accuracy in percent after the last completed epoch.
        best_accuracy: the best per-epoch accuracy (reported, not used for ranking by default).
        epochs_completed: evaluations done (an early stop ends the count).
        steps_completed: optimizer steps done.
        history: one dict per epoch: epoch, step, accuracy, train_loss, lr, elapsed_s.
        stopped_early: the report callback asked to stop.
        wall_time_s: the whole call, model build and evaluations included.
        train_images_per_s: training throughput, steady state (the first step, which allocates, excluded).
        num_params: parameters of the trained model.
        device, threads: where it ran.
        proxy: the settings (``ProxyConfig.to_dict()``); dataset: the data's description and selection.
    """

    accuracy: float
    best_accuracy: float
    epochs_completed: int
    steps_completed: int
    history: list[dict[str, float]]
    stopped_early: bool
    wall_time_s: float
    train_images_per_s: float
    num_params: int
    device: str
    threads: int
    proxy: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _is_out_of_memory(err: BaseException) -> bool:
    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def augment(images: torch.Tensor, gen: torch.Generator, pad: int) -> torch.Tensor:
    """Random crop with zero padding ``pad`` and horizontal flip, per image, on a uint8 batch."""
    b, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    offsets = torch.randint(0, 2 * pad + 1, (2, b), generator=gen).to(images.device)
    rows = (offsets[0, :, None] + torch.arange(h, device=images.device))[:, :, None]  # B, H, 1
    cols = (offsets[1, :, None] + torch.arange(w, device=images.device))[:, None, :]  # B, 1, W
    crops = padded[torch.arange(b, device=images.device)[:, None, None], :, rows, cols]  # B, H, W, C
    crops = crops.permute(0, 3, 1, 2)
    flip = (torch.rand(b, generator=gen) < 0.5).to(images.device)[:, None, None, None]
    return torch.where(flip, crops.flip(-1), crops)


class _NumpyStream:
    """Runs a callable that draws from numpy's global RNG (timm's Mixup does) on a private seeded stream."""

    def __init__(self, seed: int):
        self._state = np.random.RandomState(seed).get_state()

    def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
        saved = np.random.get_state()
        np.random.set_state(self._state)
        try:
            return fn(*args)
        finally:
            self._state = np.random.get_state()
            np.random.set_state(saved)

    def get_state(self) -> Any:
        return self._state

    def set_state(self, state: Any) -> None:
        self._state = state


@torch.no_grad()
def _evaluate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, data: Dataset,
              proxy: ProxyConfig, device: torch.device, amp: bool, channels_last: bool) -> float:
    model.eval()
    correct = 0
    for x, y in zip(images.split(proxy.eval_batch_size), labels.split(proxy.eval_batch_size)):
        x = normalize(x.to(device), data)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            correct += int((model(x).argmax(dim=1) == y.to(device)).sum())
    return 100.0 * correct / max(1, len(labels))


def _optimization(model: torch.nn.Module, proxy: ProxyConfig, data: Dataset, total_steps: int,
                  warmup_steps: int) -> tuple[Any, Any, torch.nn.Module, Mixup | None]:
    """AdamW, warm-up then cosine per step, the loss, and Mixup/CutMix when asked for."""
    optimizer = timm.optim.create_optimizer_v2(model, opt="adamw", lr=proxy.lr, weight_decay=proxy.weight_decay)
    scheduler = timm.scheduler.CosineLRScheduler(
        optimizer, t_initial=max(1, total_steps - warmup_steps), lr_min=0.01 * proxy.lr,
        warmup_t=warmup_steps, warmup_lr_init=0.01 * proxy.lr, warmup_prefix=True, t_in_epochs=False)
    if proxy.mixup or proxy.cutmix:
        mixup = Mixup(mixup_alpha=proxy.mixup, cutmix_alpha=proxy.cutmix, label_smoothing=proxy.label_smoothing,
                      num_classes=data.num_classes)
        return optimizer, scheduler, timm.loss.SoftTargetCrossEntropy(), mixup
    return optimizer, scheduler, timm.loss.LabelSmoothingCrossEntropy(smoothing=proxy.label_smoothing), None


def _step(model: torch.nn.Module, optimizer: Any, loss_fn: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
          amp: bool, device: torch.device) -> float:
    """One optimizer step; the loss (not stepped when it is not finite)."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        loss = loss_fn(model(x), y)
    value = loss.item()
    if math.isfinite(value):
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return value


CHECKPOINT_FORMAT = "cvt-nas proxy checkpoint"


def _settings_key(proxy: ProxyConfig) -> dict[str, Any]:
    """What a checkpoint must share with the settings that continue it (where it runs may differ)."""
    return {k: v for k, v in proxy.to_dict().items() if k not in ("device", "threads", "eval_batch_size")}


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """A proxy checkpoint written by :func:`train_proxy` (``UserError`` naming the file when it is not one)."""
    return read_saved(path, CHECKPOINT_FORMAT, "proxy checkpoint")


def train_proxy(model_config: Any, dataset: Dataset, proxy: ProxyConfig | None = None, *,
                report: ReportFn | None = None, checkpoint: Path | None = None,
                start_from: Path | None = None) -> ProxyResult:
    """Train a candidate briefly on ``dataset`` and measure its top-1 validation accuracy.

    Args:
        model_config: any config ``cvt.build_model`` accepts (``CvTConfig``, ``CCTConfig``), adapted to the
            data (input channels, classes), the proxy resolution and ``proxy.width_mult``; or an
            ``nn.Module`` trained as it is (a baseline such as a timm model).
        dataset: from :func:`nas.data.load_dataset`; the proxy's classes/subsets/resolution are applied.
        proxy: the settings; defaults to ``ProxyConfig()``.
        report: called as ``report(epoch, accuracy)`` after every epoch (1-based); returning True stops
            training (Optuna pruners, ASHA). Exceptions it raises (e.g. ``optuna.TrialPruned``) propagate.
        checkpoint: written (atomically) after every epoch: weights, optimizer, random streams, history. When
            it exists, training resumes after its last epoch (a finished one returns its result at once), so a
            killed run loses at most the epoch in progress; it must come from the same settings.
        start_from: the checkpoint of another training (a lower rung) whose weights and optimizer state this
            one continues from, under its own settings and schedule.

    Returns:
        A :class:`ProxyResult`.

    Raises:
        TrainingFailed: non-finite loss (stops at once) or out of memory.
        UserError: settings that do not fit the data or the machine; a checkpoint from other settings.

    Example:
        >>> import cvt
        >>> from nas.data import load_dataset
        >>> tiny = cvt.CvTConfig(depths=(1, 1, 1), embed_dims=(16, 32, 64), num_heads=(1, 2, 4))
        >>> result = train_proxy(tiny, load_dataset("synthetic"), ProxyConfig(epochs=1, train_subset=256))
        >>> 0.0 <= result.accuracy <= 100.0
        True
    """
    proxy = proxy or ProxyConfig()
    start = time.perf_counter()
    device = resolve_device(proxy.device, "proxy device")
    saved = _read_checkpoint(checkpoint) if checkpoint is not None and checkpoint.exists() else None
    if saved is not None and saved["settings"] != _settings_key(proxy):
        raise UserError(f"{checkpoint}: written by a training with other settings; delete it or choose another path")
    origin = _read_checkpoint(start_from) if start_from is not None and saved is None else None
    data = select_data(dataset, proxy)
    on_gpu = device.type == "cuda"
    amp, channels_last = proxy.amp and on_gpu, proxy.channels_last and on_gpu
    n_train = len(data.train_y)
    batch_size = min(proxy.batch_size, n_train)
    if proxy.mixup or proxy.cutmix:
        batch_size -= batch_size % 2  # timm's Mixup pairs each image with its mirror in the batch
    steps_per_epoch = n_train // batch_size
    total_steps = proxy.steps or proxy.epochs * steps_per_epoch
    # At most half the budget warms up, so that short step budgets still decay.
    warmup_steps = min(round(proxy.warmup_epochs * steps_per_epoch), total_steps // 2)
    num_epochs = math.ceil(total_steps / steps_per_epoch)
    epoch, step = 1, 0

    with seeded_run(proxy, device) as threads:
        try:
            model = build_proxy_model(model_config, data, proxy).to(device)
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            optimizer, scheduler, loss_fn, mixup = _optimization(model, proxy, data, total_steps, warmup_steps)
            numpy_stream = _NumpyStream(proxy.seed)
            gen = torch.Generator().manual_seed(proxy.seed)
            history: list[dict[str, float]] = []
            stopped_early = False
            train_time, timed_images, done = 0.0, 0, 0
            for state in (origin, saved):
                if state is not None:
                    model.load_state_dict(state["model"])
                    optimizer.load_state_dict(state["optimizer"])
            if saved is not None:
                gen.set_state(saved["generator"])
                numpy_stream.set_state(saved["numpy"])
                torch.set_rng_state(saved["torch"])
                history, stopped_early = saved["history"], saved["stopped_early"]
                train_time, timed_images, step = saved["train_time"], saved["timed_images"], saved["step"]
                done = len(history)
                start -= saved["elapsed_s"]
            train_x, train_y = data.train_x.to(device), data.train_y.to(device)
            pad = max(1, proxy.resolution // 8)  # 4 px at 32, as in the usual CIFAR recipe

            def batches(order: torch.Tensor, count: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
                """``count`` augmented (and mixed) training batches in ``order``."""
                for b in range(count):
                    idx = order[b * batch_size:(b + 1) * batch_size]
                    x, y = normalize(augment(train_x[idx], gen, pad), data), train_y[idx]
                    if mixup is not None:
                        x, y = numpy_stream(mixup, x, y)
                    yield (x.contiguous(memory_format=torch.channels_last) if channels_last else x), y

            last = done if stopped_early else num_epochs  # a resumed training that was stopped early stays stopped
            for epoch in range(done + 1, last + 1):
                model.train()
                order = torch.randperm(n_train, generator=gen).to(device)
                loss_sum, loss_count = 0.0, 0
                tick = time.perf_counter()
                for x, y in batches(order, min(steps_per_epoch, total_steps - step)):
                    scheduler.step_update(num_updates=step)
                    value = _step(model, optimizer, loss_fn, x, y, amp, device)
                    if not math.isfinite(value):
                        raise TrainingFailed(
                            f"training diverged: loss = {value} at epoch {epoch}, step {step} "
                            f"(lr {optimizer.param_groups[0]['lr']:.3g}); lower the learning rate",
                            kind="diverged", epoch=epoch, step=step)
                    loss_sum, loss_count, step = loss_sum + value, loss_count + 1, step + 1
                    if step > 1:  # the first step allocates and warms caches: not steady state
                        if on_gpu:
                            torch.cuda.synchronize(device)
                        train_time += time.perf_counter() - tick
                        timed_images += len(y)
                    tick = time.perf_counter()
                accuracy = _evaluate(model, data.val_x, data.val_y, data, proxy, device, amp, channels_last)
                history.append({"epoch": epoch, "step": step, "accuracy": accuracy,
                                "train_loss": loss_sum / max(1, loss_count), "lr": optimizer.param_groups[0]["lr"],
                                "elapsed_s": time.perf_counter() - start})
                logger.debug("proxy epoch %d: accuracy %.2f%%, loss %.4f", epoch, accuracy,
                             history[-1]["train_loss"])
                stopped_early = report is not None and bool(report(epoch, accuracy))
                if checkpoint is not None:
                    _save_checkpoint(checkpoint, {
                        "format": CHECKPOINT_FORMAT, "settings": _settings_key(proxy), "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(), "generator": gen.get_state(),
                        "numpy": numpy_stream.get_state(), "torch": torch.get_rng_state(), "history": history,
                        "stopped_early": stopped_early, "step": step, "train_time": train_time,
                        "timed_images": timed_images, "elapsed_s": time.perf_counter() - start})
                if stopped_early:
                    break
        except TrainingFailed:
            raise
        except (torch.OutOfMemoryError, RuntimeError) as err:
            if not _is_out_of_memory(err):
                raise
            if on_gpu:
                torch.cuda.empty_cache()
            raise TrainingFailed(
                f"out of memory at epoch {epoch}, step {step} (batch {batch_size}, {proxy.resolution}px, "
                f"{device}): lower batch_size, resolution or width_mult", kind="out_of_memory",
                epoch=epoch, step=step) from None

    accuracies = [h["accuracy"] for h in history]
    return ProxyResult(
        accuracy=accuracies[-1], best_accuracy=max(accuracies), epochs_completed=len(history),
        steps_completed=step, history=history, stopped_early=stopped_early,
        wall_time_s=time.perf_counter() - start,
        train_images_per_s=timed_images / train_time if train_time > 0 else float("nan"),
        num_params=sum(p.numel() for p in model.parameters()), device=str(device), threads=threads,
        proxy=proxy.to_dict(), dataset=data.description)


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
