"""Fashion-MNIST from its idx files (gzipped or not).

Xiao et al., "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning Algorithms", 2017.
The idx format (LeCun's MNIST format): big-endian magic ``0x0000 08 NDIM`` (unsigned bytes), NDIM int32
sizes, then the raw bytes. Debian's ``dataset-fashion-mnist`` package installs the four files under
``/usr/share/datasets/fashion-mnist``.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from cvt import UserError

from ._dataset import Dataset

DEBIAN_PATH = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
LAYOUT = ("a folder with train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
          "t10k-labels-idx1-ubyte (each optionally .gz)")


def _find(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise UserError(f"{folder / name}[.gz] is missing: expected {LAYOUT}")


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An unsigned-byte idx array with ``ndim`` dimensions (gzip recognised by its magic bytes)."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise UserError(f"{path} is a damaged gzip file ({err}); expected {LAYOUT}") from None
    header = 4 + 4 * ndim
    if len(raw) < header or raw[:3] != b"\x00\x00\x08" or raw[3] != ndim:
        raise UserError(f"{path} is not an idx file of unsigned bytes with {ndim} dimension(s); expected {LAYOUT}")
    shape = tuple(int(v) for v in np.frombuffer(raw[4:header], dtype=">i4"))
    if len(raw) - header != int(np.prod(shape)):
        raise UserError(f"{path} is truncated or padded: header says {shape}, i.e. {int(np.prod(shape))} bytes of "
                        f"data, but {len(raw) - header} follow; expected {LAYOUT}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()  # writable for torch


def read_fashion_mnist(folder: Path) -> Dataset:
    """Read the four idx files of ``folder`` (train = 60,000 images, validation = the 10,000 test images)."""
    if not folder.is_dir():
        raise UserError(f"Fashion-MNIST folder {folder} does not exist: expected {LAYOUT}")
    splits = {}
    for split, (images_name, labels_name) in FILES.items():
        images_path, labels_path = _find(folder, images_name), _find(folder, labels_name)
        images, labels = read_idx(images_path, 3), read_idx(labels_path, 1)
        if len(images) != len(labels):
            raise UserError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
        if len(labels) and labels.max() >= len(CLASSES):
            raise UserError(f"{labels_path} has label {labels.max()}; Fashion-MNIST labels are 0..9")
        if images.shape[1] != images.shape[2]:
            raise UserError(f"{images_path} holds {images.shape[1]}x{images.shape[2]} images; expected square ones")
        splits[split] = (images[:, None], labels)
    return Dataset.from_numpy("fashion-mnist", splits["train"], splits["val"], CLASSES, source=str(folder),
                              val_source="t10k (the official test split)")
