"""Class-per-folder images decoded with PIL, cached as ``.npy`` so a second process does not decode again.

Two layouts are accepted::

    PATH/train/<class>/*.jpg  and  PATH/{val,validation,test}/<class>/*.jpg   (validation given)
    PATH/<class>/*.jpg                                                         (a held-out split is made)

Images are converted to RGB, their shorter side resized to ``image_size`` and centre-cropped.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from cvt import UserError

from ._dataset import Dataset, held_out_split

logger = logging.getLogger(__name__)

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff")
VAL_FOLDERS = ("val", "validation", "test")
MAX_DEFAULT_SIZE = 64  # default cap: proxies train at 32-64 px, and memory grows with the square
LAYOUT = ("PATH/<class>/<image> (a validation split is held out), or PATH/train/<class>/<image> with "
          "PATH/val/<class>/<image>")


def _list(folder: Path) -> tuple[list[str], list[tuple[Path, str]]]:
    """Class names (sorted sub-folders) and (file, class name) pairs, in a stable order."""
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = []
    for name in classes:
        found = sorted(p for p in (folder / name).rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
        if not found:
            raise UserError(f"class folder {folder / name} holds no images ({', '.join(EXTENSIONS)}); "
                            f"expected {LAYOUT}")
        files += [(p, name) for p in found]
    if not classes:
        raise UserError(f"{folder} has no class folders: expected {LAYOUT}")
    return classes, files


def _decode(path: Path, size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            if (w, h) != (size, size):
                scale = size / min(w, h)
                img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
                left, top = (img.size[0] - size) // 2, (img.size[1] - size) // 2
                img = img.crop((left, top, left + size, top + size))
            return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise UserError(f"{path} cannot be decoded as an image ({err}); remove or replace it") from None


def _first_size(path: Path) -> int:
    from PIL import Image

    try:
        with Image.open(path) as img:
            w, h = img.size
    except OSError as err:
        raise UserError(f"{path} cannot be decoded as an image ({err}); remove or replace it") from None
    return w if w == h and w <= MAX_DEFAULT_SIZE else MAX_DEFAULT_SIZE


def _load_split(folder: Path, classes: list[str], files: list[tuple[Path, str]], size: int,
                cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Decoded images and labels of one folder, from the cache when its file list is unchanged."""
    stats = [(str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p, _ in files]
    key = hashlib.sha1(json.dumps([str(folder.resolve()), size, classes, stats]).encode()).hexdigest()[:16]
    x_path, y_path = cache_dir / f"imagefolder-{key}-x.npy", cache_dir / f"imagefolder-{key}-y.npy"
    if x_path.is_file() and y_path.is_file():
        return np.load(x_path), np.load(y_path)
    index = {name: i for i, name in enumerate(classes)}
    images = np.stack([_decode(p, size) for p, _ in files])
    labels = np.array([index[name] for _, name in files], dtype=np.int64)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        for path, array in ((x_path, images), (y_path, labels)):
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                np.save(f, array)
            tmp.replace(path)  # atomic: concurrent workers never read half a file
    except OSError as err:  # a read-only cache only costs decoding again next time
        logger.warning("cannot cache decoded images in %s: %s", cache_dir, err)
    return images, labels


def read_imagefolder(path: Path, *, image_size: int | None, seed: int, cache_dir: Path,
                     val_fraction: float = 0.1) -> Dataset:
    """Read an image folder (see the module docstring for layouts)."""
    if not path.is_dir():
        raise UserError(f"image folder {path} does not exist: expected {LAYOUT}")
    train_dir = path / "train" if (path / "train").is_dir() else path
    val_dir = next((path / n for n in VAL_FOLDERS if (path / n).is_dir()), None) if train_dir != path else None
    classes, files = _list(train_dir)
    if len(classes) < 2:
        raise UserError(f"{train_dir} has {len(classes)} class folder; need at least 2: expected {LAYOUT}")
    size = image_size or _first_size(files[0][0])
    train = _load_split(train_dir, classes, files, size, cache_dir / "imagefolder")
    if val_dir is not None:
        val_classes, val_files = _list(val_dir)
        unknown = sorted(set(val_classes) - set(classes))
        if unknown:
            raise UserError(f"{val_dir} has class folder(s) {', '.join(unknown)} that {train_dir} lacks; "
                            f"validation classes must be training classes")
        val = _load_split(val_dir, classes, val_files, size, cache_dir / "imagefolder")
        val_source = str(val_dir)
    else:
        train_idx, val_idx = held_out_split(train[1], val_fraction, seed)
        train, val = (train[0][train_idx], train[1][train_idx]), (train[0][val_idx], train[1][val_idx])
        val_source = f"{val_fraction:.0%} held out of {train_dir} (class-balanced, seed {seed})"
    return Dataset.from_numpy("imagefolder", train, val, classes, source=str(path), val_source=val_source)
