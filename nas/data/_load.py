"""``load_dataset``: one entry point for every dataset, loaded once per process."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from cvt import UserError

from . import _cifar
from ._builtin import load_digits, make_synthetic
from .._paths import default_cache_dir, default_data_root
from ._dataset import Dataset
from ._idx import DEBIAN_PATH, read_fashion_mnist
from ._imagefolder import read_imagefolder

logger = logging.getLogger(__name__)

DATASETS = ("auto", "cifar10[:PATH]", "imagefolder:PATH", "fashion-mnist[:PATH]", "digits", "synthetic")

# (name, path, seed, image_size, ...) -> Dataset; trials in one process share the decoded tensors.
_LOADED: dict[tuple, Dataset] = {}


def _offline() -> bool:
    return os.environ.get("CVT_NAS_OFFLINE", "").lower() not in ("", "0", "false", "no")


def _may_download(download: bool | None) -> bool:
    if download is not None:
        return download
    return not _offline() and _cifar.network_available(_cifar.CIFAR10_URL)


def _digits_fallback(root: Path, seed: int, reason: str) -> Dataset:
    warning = (f"{reason}: using scikit-learn's 8x8 digits (1,797 images), a toy task whose accuracies say "
               f"little about CvT/CCT architectures. For real data put a {_cifar.FOLDER} folder into {root} "
               f"(or point --data-dir / CVT_NAS_DATA at the folder that holds it), or pass --data "
               f"imagefolder:PATH or fashion-mnist:PATH")
    logger.warning(warning)
    dataset = load_digits(seed)
    dataset.description["warnings"].append(warning)
    return dataset


def _auto(root: Path, seed: int, download: bool | None) -> Dataset:
    if not _may_download(download):
        return _digits_fallback(root, seed, f"no CIFAR-10 in {root} and no network to download it")
    try:
        return _cifar.read_cifar10(_cifar.download_cifar10(root, url=_cifar.CIFAR10_URL, md5=_cifar.CIFAR10_MD5))
    except UserError as err:
        return _digits_fallback(root, seed, f"no CIFAR-10 in {root} and the download failed ({err})")


def _cifar10(path: str, root: Path, download: bool | None) -> Dataset:
    folder = Path(path).expanduser() if path else root
    found = _cifar.find_cifar10(folder)
    if found is None and not path and _may_download(download):
        found = _cifar.download_cifar10(root, url=_cifar.CIFAR10_URL, md5=_cifar.CIFAR10_MD5)
    if found is None:
        raise UserError(f"no CIFAR-10 in {folder}: expected {_cifar.LAYOUT} (build one with "
                        f"shared/data/cifar10/build.py --out {folder / _cifar.FOLDER}, or set CVT_NAS_DATA)")
    return _cifar.read_cifar10(found)


def load_dataset(name: str = "auto", data_dir: str | Path | None = None, *, seed: int = 0,
                 image_size: int | None = None, cache_dir: str | Path | None = None,
                 download: bool | None = None) -> Dataset:
    """Load a dataset by name (once per process; later calls return the same object).

    Names: ``auto`` (CIFAR-10 from the data root, else the official download when the network answers, else
    ``digits`` with a warning), ``cifar10[:PATH]``, ``imagefolder:PATH``, ``fashion-mnist[:PATH]``,
    ``digits``, ``synthetic`` (tests only). See ``docs/data.md``.

    Args:
        name: dataset name, optionally ``kind:PATH``.
        data_dir: data root searched by ``auto``, ``cifar10`` and ``fashion-mnist``; defaults to
            ``$CVT_NAS_DATA`` or ``~/.cache/cvt-nas/data``.
        seed: seeds held-out splits (image folders without a validation folder, digits) and ``synthetic``.
        image_size: size image folders are decoded to (default: the first image's size when square and
            at most 64, else 64). Other datasets keep their native size.
        cache_dir: where decoded image folders are cached; defaults to ``$CVT_NAS_CACHE`` or ``~/.cache/cvt-nas``.
        download: allow (True) or forbid (False) the CIFAR-10 download; None probes the network for a second
            unless ``CVT_NAS_OFFLINE=1``.

    Returns:
        The :class:`Dataset`; its ``description`` records what was loaded and any warning.

    Raises:
        UserError: unknown name, missing folder, wrong layout or corrupt file (one line naming the path
            and the expected layout).

    Example:
        >>> ds = load_dataset("synthetic")
        >>> ds.num_classes, tuple(ds.train_x.shape[1:])
        (4, (3, 32, 32))
    """
    kind, _, path = str(name).partition(":")
    kind = kind.strip().lower()
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_root()
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if kind == "cifar10" or (kind == "auto" and not path):  # one object per CIFAR-10 folder, however named
        found = _cifar.find_cifar10(Path(path).expanduser() if path else root)
        if found is not None:
            kind, path = "cifar10", str(found)
    where = str(Path(path).expanduser().resolve()) if path else str(root.resolve())
    key = (kind, where, seed, image_size, download)
    if key in _LOADED:
        return _LOADED[key]
    if path and kind in ("auto", "digits", "synthetic"):
        raise UserError(f"dataset {kind!r} takes no path (got {name!r}); use --data-dir for the data root")
    if kind == "auto":
        dataset = _auto(root, seed, download)
    elif kind == "cifar10":
        dataset = _cifar10(path, root, download)
    elif kind == "imagefolder":
        if not path:
            raise UserError("imagefolder needs a path: --data imagefolder:PATH with PATH/<class>/<image>")
        dataset = read_imagefolder(Path(path).expanduser(), image_size=image_size, seed=seed, cache_dir=cache)
    elif kind == "fashion-mnist":
        folder = Path(path).expanduser() if path else root / "fashion-mnist"
        if not path and not folder.is_dir() and DEBIAN_PATH.is_dir():
            folder = DEBIAN_PATH
        dataset = read_fashion_mnist(folder)
    elif kind == "digits":
        dataset = load_digits(seed)
    elif kind == "synthetic":
        dataset = make_synthetic(seed)
    else:
        raise UserError(f"unknown dataset {name!r}; use one of {', '.join(DATASETS)}")
    logger.info("dataset %s: %d train / %d validation images, %d classes, %dx%d, from %s", dataset.name,
                len(dataset.train_y), len(dataset.val_y), dataset.num_classes, dataset.image_size,
                dataset.image_size, dataset.description.get("source"))
    _LOADED[key] = dataset
    return dataset
