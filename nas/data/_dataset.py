"""``Dataset``: train/validation images held in memory as uint8 tensors, plus where they came from."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cvt import UserError

__all__ = ["Dataset"]


def balanced_indices(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` indices spread as evenly as possible over the classes present, in ascending order.

    Each class gives ``count // k`` samples (the first ``count % k`` classes one more), or all it has
    when it has fewer; the shortfall is filled from the classes with samples left.
    """
    by_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    take = [0] * len(by_class)
    left = min(count, len(labels))
    while left > 0:  # water-filling: a round adds up to an equal share to every class with samples left
        open_ = [i for i, idx in enumerate(by_class) if take[i] < len(idx)]
        share = max(1, left // len(open_))
        for i in open_:
            extra = min(share, len(by_class[i]) - take[i], left)
            take[i] += extra
            left -= extra
            if left == 0:
                break
    return np.sort(np.concatenate([idx[:n] for idx, n in zip(by_class, take)]))


def held_out_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced (train, validation) indices holding out ``fraction`` of the samples."""
    rng = np.random.default_rng(seed)
    val = balanced_indices(labels, max(1, round(fraction * len(labels))), rng)
    train = np.setdiff1d(np.arange(len(labels)), val)
    return train, val


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] units, accumulated in float64 chunks (no full float copy)."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for chunk in images.split(4096):
        chunk = chunk.to(torch.float64).div_(255)
        total += chunk.sum(dim=(0, 2, 3))
        squares += chunk.square().sum(dim=(0, 2, 3))
    n = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / n
    std = (squares / n - mean.square()).clamp_min(1e-12).sqrt()
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 N, C, H, W -> uint8 N, C, size, size (bilinear; antialiased when shrinking)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    shrink = size < images.shape[-1]
    out = [F.interpolate(chunk.float(), size=(size, size), mode="bilinear", align_corners=False,
                         antialias=shrink).round_().clamp_(0, 255).to(torch.uint8)
           for chunk in images.split(4096)]
    return torch.cat(out) if out else images.new_empty((0, images.shape[1], size, size))


@dataclass(eq=False)
class Dataset:
    """Train and validation images of one dataset, decoded once and kept in memory.

    Images are ``uint8`` tensors of shape (N, C, S, S); labels are ``int64`` in ``[0, num_classes)``.
    Treat the tensors as read-only: :func:`nas.data.load_dataset` returns the same object to every caller
    in a process.

    Attributes:
        name: short name, e.g. ``"cifar10"`` or ``"imagefolder"``.
        classes: class names, index = label.
        mean, std: per-channel statistics of the training images in [0, 1] units (for normalisation).
        description: JSON-serialisable record of what was loaded (name, source, sizes, warnings), stored
            with every result.
    """

    name: str
    train_x: torch.Tensor = field(repr=False)
    train_y: torch.Tensor = field(repr=False)
    val_x: torch.Tensor = field(repr=False)
    val_y: torch.Tensor = field(repr=False)
    classes: tuple[str, ...]
    description: dict[str, Any] = field(default_factory=dict, repr=False)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    _resized: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for split, x, y in (("train", self.train_x, self.train_y), ("validation", self.val_x, self.val_y)):
            if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != x.shape[-2]:
                raise ValueError(f"{split} images must be uint8 N, C, S, S; got {x.dtype} {tuple(x.shape)}")
            if y.shape != (x.shape[0],):
                raise ValueError(f"{split} labels must have shape ({x.shape[0]},), got {tuple(y.shape)}")
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(self.classes)):
                raise ValueError(f"{split} labels must lie in [0, {len(self.classes)})")
        if self.train_x.shape[1:] != self.val_x.shape[1:]:
            raise ValueError(f"train images {tuple(self.train_x.shape[1:])} and validation images "
                             f"{tuple(self.val_x.shape[1:])} differ in shape")
        self.train_y = self.train_y.long()
        self.val_y = self.val_y.long()
        if not self.mean:
            self.mean, self.std = _channel_stats(self.train_x)
        self.description = {
            "name": self.name,
            "num_classes": self.num_classes,
            "in_chans": self.in_chans,
            "image_size": self.image_size,
            "train_size": len(self.train_y),
            "val_size": len(self.val_y),
            "warnings": [],
            **self.description,
        }

    @classmethod
    def from_numpy(cls, name: str, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                   classes: Sequence[str], **description: Any) -> "Dataset":
        """Build from numpy (images uint8 N, C, S, S; integer labels); extra keywords go to the description."""
        return cls(name=name, classes=tuple(str(c) for c in classes), description=description,
                   train_x=torch.from_numpy(np.ascontiguousarray(train[0])),
                   train_y=torch.from_numpy(np.asarray(train[1], dtype=np.int64)),
                   val_x=torch.from_numpy(np.ascontiguousarray(val[0])),
                   val_y=torch.from_numpy(np.asarray(val[1], dtype=np.int64)))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_chans(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])

    def resized(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(train, validation) images at ``size`` x ``size``, computed once per size and kept."""
        if size not in self._resized:
            self._resized[size] = (resize_images(self.train_x, size), resize_images(self.val_x, size))
        return self._resized[size]

    def select(self, *, classes: int | Sequence[int] | None = None, train_subset: int | None = None,
               val_subset: int | None = None, resolution: int | None = None, seed: int = 0) -> "Dataset":
        """A smaller copy: some classes, class-balanced sample subsets, another resolution.

        Args:
            classes: keep the first ``k`` classes (an int) or these class indices (relabelled 0..k-1).
            train_subset, val_subset: keep this many samples, balanced over the kept classes (seeded); a
                split with fewer samples is kept whole (``description`` records the sizes used).
            resolution: resize images to this size (cached on this object, so trials share the work).
            seed: chooses the subsets; the same seed gives the same samples.

        Raises:
            UserError: classes out of range.
        """
        if classes is None and train_subset is None and val_subset is None and resolution in (None, self.image_size):
            return self
        keep = self._class_indices(classes)
        train_x, val_x = self.resized(resolution) if resolution else (self.train_x, self.val_x)
        rng = np.random.default_rng(seed)
        picked = []
        for x, y, count in ((train_x, self.train_y, train_subset), (val_x, self.val_y, val_subset)):
            labels = y.numpy()
            idx = np.flatnonzero(np.isin(labels, keep))
            if count is not None and count < len(idx):
                idx = idx[balanced_indices(labels[idx], count, rng)]
            relabel = torch.full((self.num_classes,), -1, dtype=torch.long)
            relabel[torch.as_tensor(keep)] = torch.arange(len(keep))
            index = torch.from_numpy(idx)
            picked.append((x[index], relabel[y[index]]))
        description = {k: v for k, v in self.description.items()
                       if k not in ("num_classes", "in_chans", "image_size", "train_size", "val_size")}
        description["selection"] = {"classes": [int(c) for c in keep], "train_subset": train_subset,
                                    "val_subset": val_subset, "resolution": resolution, "seed": seed}
        return Dataset(name=self.name, train_x=picked[0][0], train_y=picked[0][1], val_x=picked[1][0],
                       val_y=picked[1][1], classes=tuple(self.classes[c] for c in keep),
                       description=description, mean=self.mean, std=self.std)

    def _class_indices(self, classes: int | Sequence[int] | None) -> list[int]:
        if classes is None:
            return list(range(self.num_classes))
        if isinstance(classes, int):
            if not 2 <= classes <= self.num_classes:
                raise UserError(f"classes = {classes}: {self.name} has {self.num_classes} classes; "
                                f"keep between 2 and {self.num_classes}")
            return list(range(classes))
        keep = [int(c) for c in classes]
        bad = [c for c in keep if not 0 <= c < self.num_classes]
        if bad or len(set(keep)) != len(keep) or len(keep) < 2:
            raise UserError(f"classes = {list(classes)}: give at least 2 distinct class indices in "
                            f"[0, {self.num_classes}) for {self.name}")
        return keep
