"""CIFAR-10 in its original ``cifar-10-batches-py`` layout, and the official download.

Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009. The folder holds
``data_batch_1`` ... ``data_batch_5`` (train, 10,000 images each), ``test_batch`` (validation here) and
``batches.meta``: Python pickles of dicts whose ``data`` is a 10000 x 3072 uint8 array (CHW, row-major).
"""
from __future__ import annotations

import hashlib
import logging
import pickle
import shutil
import tarfile
import threading
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from cvt import UserError

from ._dataset import Dataset

logger = logging.getLogger(__name__)

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
LAYOUT = f"a {FOLDER} folder with data_batch_1..data_batch_5, test_batch and batches.meta"


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a batch file cannot run code when loaded."""

    # What the original files (Python 2, numpy 1) and re-pickled copies (protocols 2-5, numpy 1 or 2) use.
    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy.core.numeric", "_frombuffer"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> Any:
        legacy = module.replace("numpy._core.", "numpy.core.")
        if (legacy, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        # numpy 2 renamed numpy.core to numpy._core; pickles from numpy 1 name the old module.
        return super().find_class(legacy.replace("numpy.core.", "numpy._core."), name)


def _load_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            data = _ArrayUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise UserError(f"{path} is missing: expected {LAYOUT}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise UserError(f"{path} is not a CIFAR-10 batch file ({err}); expected {LAYOUT}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a CIFAR-10 batch file (no dict inside); expected {LAYOUT}")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in data.items()}


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    data = _load_pickle(path)
    images, labels = data.get("data"), data.get("labels")
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3072:
        raise UserError(f"{path}: 'data' must be an N x 3072 uint8 array (32x32 RGB, CHW); expected {LAYOUT}")
    labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
    if labels.shape != (images.shape[0],) or (len(labels) and not 0 <= labels.min() <= labels.max() < 10):
        raise UserError(f"{path}: 'labels' must hold one label in 0..9 per image; expected {LAYOUT}")
    return images.reshape(-1, 3, 32, 32), labels


def find_cifar10(root: Path) -> Path | None:
    """The ``cifar-10-batches-py`` folder in ``root`` (or ``root`` itself), if there is one."""
    for folder in (root, root / FOLDER):
        if (folder / "data_batch_1").is_file():
            return folder
    return None


def read_cifar10(folder: Path) -> Dataset:
    """Read the folder (train = the five data batches, validation = ``test_batch``)."""
    if not folder.is_dir():
        raise UserError(f"CIFAR-10 folder {folder} does not exist: expected {LAYOUT}")
    batches = [_read_batch(folder / name) for name in TRAIN_FILES]
    test = _read_batch(folder / "test_batch")
    classes = CLASSES
    if (folder / "batches.meta").is_file():
        names = _load_pickle(folder / "batches.meta").get("label_names")
        if isinstance(names, list) and len(names) == 10:
            classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    train = (np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]))
    return Dataset.from_numpy("cifar10", train, test, classes, source=str(folder),
                              val_source="test_batch (the official test split)")


def network_available(url: str = CIFAR10_URL, timeout: float = 1.0) -> bool:
    """Whether ``url`` answers a HEAD request within ``timeout`` seconds (``file://``: whether the file exists).

    The request runs in a daemon thread so that a hanging DNS resolver cannot stall the caller.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        return Path(urllib.request.url2pathname(parts.path)).is_file()
    result: list[bool] = []

    def probe() -> None:
        try:  # a HEAD request: some sandboxes accept any TCP connection but serve nothing
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
                result.append(True)
        except (OSError, ValueError):
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_cifar10(root: Path, *, url: str = CIFAR10_URL, md5: str = CIFAR10_MD5) -> Path:
    """Download the official archive into ``root``, verify its md5 and extract it; returns the folder.

    Raises:
        UserError: the download failed, the checksum does not match, or the archive has no CIFAR-10 folder.
    """
    root.mkdir(parents=True, exist_ok=True)
    archive = root / Path(urllib.parse.urlsplit(url).path).name
    partial = archive.with_name(archive.name + ".part")
    logger.info("downloading CIFAR-10 from %s to %s", url, archive)
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except OSError as err:
        partial.unlink(missing_ok=True)
        raise UserError(f"could not download CIFAR-10 from {url}: {err}; put {FOLDER} into {root} instead") from None
    actual = _md5(partial)
    if actual != md5:
        partial.unlink()
        raise UserError(f"CIFAR-10 archive from {url} has md5 {actual}, expected {md5}: the download is "
                        f"corrupt or not the official file; retry, or put {FOLDER} into {root}")
    partial.replace(archive)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")  # "data" refuses absolute paths, links out of root, devices
    except (tarfile.TarError, OSError) as err:
        raise UserError(f"cannot extract {archive}: {err}; delete it and retry") from None
    folder = find_cifar10(root)
    if folder is None:
        raise UserError(f"{archive} held no {FOLDER} folder; expected the official cifar-10-python.tar.gz")
    archive.unlink()
    return folder
