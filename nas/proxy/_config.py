"""``ProxyConfig``: how a candidate is trained briefly to estimate its accuracy (validated, recorded)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from cvt import UserError

from .._settings import settings_from_dict

__all__ = ["ProxyConfig", "GPU_DEFAULTS"]

# Overrides of the CPU defaults for a GPU (see docs/performance.md, "Proxy training"): the whole
# training set, larger batches and more epochs, which a GPU affords in about the CPU trial's time.
GPU_DEFAULTS: dict[str, Any] = {"device": "cuda", "epochs": 10, "train_subset": None, "val_subset": None,
                                "batch_size": 256, "lr": 2e-3, "warmup_epochs": 1.0}


def _option(default: Any, kind: type, help: str) -> Any:
    """A field ``nas.search`` exposes as ``--proxy-<name>`` (help and default declared here, once)."""
    return field(default=default, metadata={"option": True, "kind": kind, "help": help})


@dataclass(frozen=True)
class ProxyConfig:
    """Settings of one proxy training; defaults fit a CvT-13-sized candidate in about 60 s on 2 CPU cores.

    The budget is ``epochs`` passes over the training subset, or exactly ``steps`` optimizer steps when
    ``steps`` is set; either way the model is evaluated (and ``report`` called) after every epoch.

    Example:
        >>> ProxyConfig(epochs=1, train_subset=512).to_dict()["train_subset"]
        512
    """

    # Budget.
    epochs: int = _option(2, int, "training epochs per candidate")
    steps: int | None = _option(None, int, "optimizer steps per candidate instead of epochs")  # eval still per epoch
    # Data.
    resolution: int = _option(32, int, "input size during proxy training (costs use --resolution)")  # 8x8, 4x4, 2x2
    train_subset: int | None = _option(3000, int, "train on this many images, class-balanced ('all' for every image)")
    val_subset: int | None = _option(1000, int, "evaluate on this many images ('all' for every image)")
    classes: int | tuple[int, ...] | None = _option(None, int, "use only the first N classes")  # or these indices
    # Optimisation (AdamW, linear warm-up then cosine to 1% of lr, per step).
    batch_size: int = _option(64, int, "training batch size")  # small batches: more steps in a short budget
    lr: float = _option(1e-3, float, "peak learning rate (AdamW)")
    weight_decay: float = _option(0.05, float, "AdamW weight decay")
    warmup_epochs: float = _option(0.5, float, "linear warm-up before the cosine schedule")
    label_smoothing: float = _option(0.1, float, "label smoothing")
    mixup: float = _option(0.0, float, "Mixup alpha (0 disables)")  # off: it slows learning in a 2-epoch budget
    cutmix: float = _option(0.0, float, "CutMix alpha (0 disables)")
    # Model.
    width_mult: float = _option(1.0, float, "multiply every stage width by this during proxy training")
    # Execution (set by the search from its own settings, not options of their own).
    seed: int = 0  # model init, subsets, batch order, augmentation: same seed, same accuracy (CPU)
    device: str = "auto"  # "auto" = cuda when available, else cpu
    threads: int | None = None  # CPU threads during training; None = the cores this process may use
    amp: bool = True  # bf16 autocast, on CUDA only
    channels_last: bool = True  # on CUDA only
    eval_batch_size: int = 256

    def __post_init__(self) -> None:
        if isinstance(self.classes, list):
            object.__setattr__(self, "classes", tuple(self.classes))
        self._check_int("epochs", 1)
        self._check_int("steps", 1, optional=True)
        self._check_int("resolution", 8)
        self._check_int("train_subset", 2, optional=True)
        self._check_int("val_subset", 1, optional=True)
        self._check_int("batch_size", 2)
        self._check_int("eval_batch_size", 1)
        self._check_int("seed", 0)
        self._check_int("threads", 1, optional=True)
        for name in ("lr", "width_mult"):
            self._check_number(name, positive=True)
        for name in ("weight_decay", "warmup_epochs", "mixup", "cutmix"):
            self._check_number(name, positive=False)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise UserError(f"proxy label_smoothing = {self.label_smoothing!r}: expected a value in [0, 1)")
        if self.classes is not None:
            ok = (self.classes >= 2) if _is_int(self.classes) else (
                isinstance(self.classes, tuple) and len(self.classes) >= 2 and all(_is_int(c) for c in self.classes))
            if not ok:
                raise UserError(f"proxy classes = {self.classes!r}: give a class count >= 2 or a list of at least "
                                f"2 class indices")
        if not isinstance(self.device, str) or not self.device:
            raise UserError(f"proxy device = {self.device!r}: use auto, cpu, cuda or cuda:N")

    def _check_int(self, name: str, minimum: int, optional: bool = False) -> None:
        value = getattr(self, name)
        if value is None and optional:
            return
        if not _is_int(value) or value < minimum:
            none = " or null" if optional else ""
            raise UserError(f"proxy {name} = {value!r}: expected an integer >= {minimum}{none}")

    def _check_number(self, name: str, positive: bool) -> None:
        value = getattr(self, name)
        bad = isinstance(value, bool) or not isinstance(value, (int, float)) or value != value
        if bad or (value <= 0 if positive else value < 0):
            raise UserError(f"proxy {name} = {value!r}: expected a number {'> 0' if positive else '>= 0'}")

    @classmethod
    def for_device(cls, device: str = "cpu", **overrides: Any) -> "ProxyConfig":
        """The defaults for ``device`` ("cpu" or "cuda[:N]"), with ``overrides`` applied."""
        base = dict(GPU_DEFAULTS, device=device) if device.startswith("cuda") else {"device": device}
        return cls(**{**base, **overrides})

    def replace(self, **changes: Any) -> "ProxyConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable settings (recorded with every result)."""
        data = dataclasses.asdict(self)
        if isinstance(self.classes, tuple):
            data["classes"] = list(self.classes)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ProxyConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error naming the known ones."""
        return settings_from_dict(cls, data, "proxy")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
