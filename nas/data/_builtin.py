"""Datasets that need no files: scikit-learn's 8x8 digits and a generated task for tests."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ._dataset import Dataset, held_out_split

DIGITS_VAL_FRACTION = 0.2


def load_digits(seed: int) -> Dataset:
    """The 1,797 8x8 handwritten digits bundled with scikit-learn (UCI), 20% held out (class-balanced)."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = np.round(bunch.images * (255 / 16)).astype(np.uint8)[:, None]  # values 0..16 -> 0..255
    labels = bunch.target.astype(np.int64)
    train, val = held_out_split(labels, DIGITS_VAL_FRACTION, seed)
    return Dataset.from_numpy("digits", (images[train], labels[train]), (images[val], labels[val]),
                              [str(d) for d in range(10)], source="sklearn.datasets.load_digits",
                              val_source=f"{DIGITS_VAL_FRACTION:.0%} held out (class-balanced, seed {seed})")


def make_synthetic(seed: int, *, num_classes: int = 4, size: int = 32, train: int = 1024, val: int = 256,
                   noise: float = 48.0) -> Dataset:
    """A learnable task for tests: each class is a smooth random colour pattern, shifted and noisy per image.

    Flipping or cropping an image keeps it recognisable, so the proxy's augmentation applies unchanged.
    """
    gen = torch.Generator().manual_seed(seed)
    # One coarse 4x4 colour grid per class, upsampled: patterns differ in colour and layout.
    templates = F.interpolate(torch.rand(num_classes, 3, 4, 4, generator=gen) * 255, size=(size, size),
                              mode="bilinear", align_corners=False)

    def sample(count: int) -> tuple[np.ndarray, np.ndarray]:
        labels = torch.arange(count) % num_classes
        labels = labels[torch.randperm(count, generator=gen)]
        shifts = torch.randint(-size // 8, size // 8 + 1, (count, 2), generator=gen)
        images = torch.stack([templates[c].roll((int(dy), int(dx)), dims=(1, 2))
                              for c, (dy, dx) in zip(labels.tolist(), shifts)])
        images = images + noise * torch.randn(images.shape, generator=gen)
        return images.round().clamp(0, 255).to(torch.uint8).numpy(), labels.numpy()

    return Dataset.from_numpy("synthetic", sample(train), sample(val), [f"pattern{i}" for i in range(num_classes)],
                              source="generated", val_source="generated", seed=seed)
