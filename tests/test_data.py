"""nas.data: every reader on small files written here, the auto fallback order, bad input."""
from __future__ import annotations

import gzip
import hashlib
import logging
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from cvt import UserError
from nas.data import Dataset, load_dataset
from nas.data import _cifar, _imagefolder, _load

CIFAR_LAYOUT = "data_batch_1..data_batch_5, test_batch"
REAL_PROBE = _cifar.network_available


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No network, a private cache and data root, and a fresh per-process dataset cache for every test."""
    monkeypatch.setattr(_load, "_LOADED", {})
    monkeypatch.setenv("CVT_NAS_DATA", str(tmp_path / "data-root"))
    monkeypatch.setenv("CVT_NAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CVT_NAS_OFFLINE", raising=False)
    monkeypatch.setattr(_cifar, "network_available", lambda *a, **k: False)


def write_cifar(folder: Path, per_batch: int = 6) -> dict[str, np.ndarray]:
    """A cifar-10-batches-py folder in the original pickle layout (bytes keys), tiny batches."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for name in (*_cifar.TRAIN_FILES, "test_batch"):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data}, f, protocol=2)
        arrays[name] = data
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)], b"num_vis": 3072}, f, protocol=2)
    return arrays


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    raw = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def write_images(folder: Path, classes: dict[str, int], size=(12, 10)) -> None:
    from PIL import Image

    rng = np.random.default_rng(1)
    for name, count in classes.items():
        (folder / name).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{i:03d}.png")


# ---------------------------------------------------------------------------- CIFAR-10

def test_cifar_reader_matches_written_files(tmp_path):
    arrays = write_cifar(tmp_path / "cifar-10-batches-py")
    ds = load_dataset("cifar10", data_dir=tmp_path)
    assert ds.name == "cifar10" and ds.classes[:2] == ("c0", "c1")
    assert ds.train_x.shape == (30, 3, 32, 32) and ds.val_x.shape == (6, 3, 32, 32)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    np.testing.assert_array_equal(ds.train_x[:6].reshape(6, -1).numpy(), arrays["data_batch_1"])
    np.testing.assert_array_equal(ds.val_x.reshape(6, -1).numpy(), arrays["test_batch"])
    assert ds.description["source"] == str(tmp_path / "cifar-10-batches-py")
    assert load_dataset("cifar10", data_dir=tmp_path) is ds  # loaded once per process


def test_cifar_corrupt_and_hostile_files(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder)
    (folder / "data_batch_3").write_bytes(b"\x80\x02}q\x00(X")  # truncated pickle
    with pytest.raises(UserError, match=r"data_batch_3 is not a CIFAR-10 batch file.*data_batch_1\.\.data_batch_5"):
        _cifar.read_cifar10(folder)

    class Hostile:  # would call a function while loading
        def __reduce__(self):
            return (os.getcwd, ())

    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": Hostile()}, protocol=2))
    with pytest.raises(UserError, match=r"unexpected object \w+\.getcwd"):
        _cifar.read_cifar10(folder)
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(UserError, match="N x 3072 uint8"):
        _cifar.read_cifar10(folder)


def test_cifar_missing_folder_names_path_and_layout(tmp_path):
    with pytest.raises(UserError, match=rf"no CIFAR-10 in {tmp_path}.*{CIFAR_LAYOUT}"):
        load_dataset("cifar10", data_dir=tmp_path, download=False)
    with pytest.raises(UserError, match=rf"no CIFAR-10 in {tmp_path / 'nope'}"):
        load_dataset(f"cifar10:{tmp_path / 'nope'}")


def make_archive(tmp_path: Path) -> tuple[str, str]:
    """A tar.gz shaped like the official archive, as a file:// URL, and its md5."""
    write_cifar(tmp_path / "src" / "cifar-10-batches-py")
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return archive.as_uri(), hashlib.md5(archive.read_bytes()).hexdigest()


def test_download_verifies_checksum_and_extracts(tmp_path):
    url, md5 = make_archive(tmp_path)
    # The real probe (the fixture replaced it): a file:// URL "answers" when the file exists.
    assert REAL_PROBE(url) and not REAL_PROBE(url + ".missing")
    root = tmp_path / "root"
    with pytest.raises(UserError, match="has md5 .* expected 0+"):
        _cifar.download_cifar10(root, url=url, md5="0" * 32)
    assert _cifar.find_cifar10(root) is None and not list(root.iterdir())  # nothing half-written left
    folder = _cifar.download_cifar10(root, url=url, md5=md5)
    assert folder == root / "cifar-10-batches-py" and _cifar.read_cifar10(folder).train_x.shape[0] == 30
    with pytest.raises(UserError, match="could not download CIFAR-10"):
        _cifar.download_cifar10(tmp_path / "other", url=url + ".missing", md5=md5)


# ---------------------------------------------------------------------------- auto

def test_auto_prefers_cifar_in_data_root(tmp_path):
    write_cifar(tmp_path / "root" / "cifar-10-batches-py")
    ds = load_dataset("auto", data_dir=tmp_path / "root")
    assert ds.name == "cifar10" and not ds.description["warnings"]
    assert load_dataset("cifar10", data_dir=tmp_path / "root") is ds


def test_auto_downloads_when_network_answers(tmp_path, monkeypatch):
    url, md5 = make_archive(tmp_path)
    monkeypatch.setattr(_cifar, "CIFAR10_URL", url)
    monkeypatch.setattr(_cifar, "CIFAR10_MD5", md5)
    monkeypatch.setattr(_cifar, "network_available", lambda u, timeout=1.0: u == url)
    ds = load_dataset("auto", data_dir=tmp_path / "root")
    assert ds.name == "cifar10" and (tmp_path / "root" / "cifar-10-batches-py" / "test_batch").is_file()


def test_auto_falls_back_to_digits_with_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        ds = load_dataset("auto", data_dir=tmp_path)
    assert ds.name == "digits" and ds.in_chans == 1 and ds.image_size == 8
    (warning,) = ds.description["warnings"]
    assert "no CIFAR-10" in warning and "CVT_NAS_DATA" in warning and "imagefolder:PATH" in warning
    assert warning in caplog.text


def test_auto_offline_env_skips_the_probe(tmp_path, monkeypatch):
    monkeypatch.setenv("CVT_NAS_OFFLINE", "1")
    monkeypatch.setattr(_cifar, "network_available", lambda *a, **k: pytest.fail("probed the network"))
    assert load_dataset("auto", data_dir=tmp_path).name == "digits"


def test_auto_falls_back_when_the_download_fails(tmp_path, monkeypatch):
    url, _ = make_archive(tmp_path)
    monkeypatch.setattr(_cifar, "CIFAR10_URL", url)
    monkeypatch.setattr(_cifar, "CIFAR10_MD5", "f" * 32)
    ds = load_dataset("auto", data_dir=tmp_path / "root", download=True)
    assert ds.name == "digits" and "download failed" in ds.description["warnings"][0]


# ---------------------------------------------------------------------------- Fashion-MNIST (idx)

@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_idx(tmp_path, compress):
    rng = np.random.default_rng(2)
    images = {"train": rng.integers(0, 256, (7, 28, 28), dtype=np.uint8),
              "t10k": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)}
    suffix = ".gz" if compress else ""
    for split, x in images.items():
        write_idx(tmp_path / f"{split}-images-idx3-ubyte{suffix}", x, compress)
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte{suffix}", np.arange(len(x), dtype=np.uint8), compress)
    ds = load_dataset(f"fashion-mnist:{tmp_path}")
    assert ds.train_x.shape == (7, 1, 28, 28) and ds.val_x.shape == (3, 1, 28, 28) and ds.num_classes == 10
    np.testing.assert_array_equal(ds.train_x[:, 0].numpy(), images["train"])
    assert ds.train_y.tolist() == list(range(7)) and ds.classes[9] == "Ankle boot"


def test_fashion_mnist_bad_files(tmp_path):
    with pytest.raises(UserError, match="train-images-idx3-ubyte.*is missing.*t10k-labels"):
        load_dataset(f"fashion-mnist:{tmp_path}")
    x = np.zeros((4, 28, 28), np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte", x, False)
    raw = (tmp_path / "train-images-idx3-ubyte").read_bytes()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(raw[:-5])
    for split in ("train", "t10k"):
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte", np.zeros(4, np.uint8), False)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", x, False)
    with pytest.raises(UserError, match="train-images-idx3-ubyte is truncated"):
        load_dataset(f"fashion-mnist:{tmp_path}")
    write_idx(tmp_path / "train-images-idx3-ubyte", x[..., None], False)  # 4 dimensions
    with pytest.raises(UserError, match="not an idx file of unsigned bytes with 3 dimension"):
        load_dataset(f"fashion-mnist:{tmp_path}")
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x1f\x8b" + b"junk")
    with pytest.raises(UserError, match="damaged gzip"):
        load_dataset(f"fashion-mnist:{tmp_path}")


# ---------------------------------------------------------------------------- image folders

def test_imagefolder_held_out_split_and_cache(tmp_path, monkeypatch):
    write_images(tmp_path / "imgs", {"cat": 10, "dog": 10})
    ds = load_dataset(f"imagefolder:{tmp_path / 'imgs'}", seed=3)
    assert ds.classes == ("cat", "dog") and ds.image_size == 64  # 12x10 is not square: default size
    assert len(ds.val_y) == 2 and sorted(ds.val_y.tolist()) == [0, 1] and len(ds.train_y) == 18
    assert "held out" in ds.description["val_source"]
    assert len(list((tmp_path / "cache" / "imagefolder").glob("*.npy"))) == 2
    # A second process reads the cache instead of decoding again.
    monkeypatch.setattr(_imagefolder, "_decode", lambda *a: pytest.fail("decoded again"))
    again = _imagefolder.read_imagefolder(tmp_path / "imgs", image_size=None, seed=3, cache_dir=tmp_path / "cache")
    assert torch.equal(again.train_x, ds.train_x) and torch.equal(again.val_y, ds.val_y)


def test_imagefolder_with_validation_folder(tmp_path):
    write_images(tmp_path / "imgs" / "train", {"a": 3, "b": 4, "c": 2}, size=(16, 16))
    write_images(tmp_path / "imgs" / "val", {"b": 2, "c": 1}, size=(16, 16))
    ds = load_dataset(f"imagefolder:{tmp_path / 'imgs'}")
    assert ds.image_size == 16 and ds.classes == ("a", "b", "c")
    assert ds.train_y.tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2] and ds.val_y.tolist() == [1, 1, 2]
    assert ds.description["val_source"] == str(tmp_path / "imgs" / "val")
    small = load_dataset(f"imagefolder:{tmp_path / 'imgs'}", image_size=8)
    assert small.image_size == 8


def test_imagefolder_bad_input(tmp_path):
    with pytest.raises(UserError, match=rf"image folder {tmp_path / 'none'} does not exist: expected PATH/<class>"):
        load_dataset(f"imagefolder:{tmp_path / 'none'}")
    write_images(tmp_path / "one", {"only": 2})
    with pytest.raises(UserError, match="1 class folder.*need at least 2"):
        load_dataset(f"imagefolder:{tmp_path / 'one'}")
    write_images(tmp_path / "bad", {"a": 2, "b": 2})
    (tmp_path / "bad" / "b" / "001.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match=r"001.png cannot be decoded as an image"):
        load_dataset(f"imagefolder:{tmp_path / 'bad'}")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(UserError, match="holds no images"):
        load_dataset(f"imagefolder:{tmp_path / 'empty'}")
    write_images(tmp_path / "split" / "train", {"a": 2, "b": 2})
    write_images(tmp_path / "split" / "val", {"z": 1})
    with pytest.raises(UserError, match="class folder.*z that .*train lacks"):
        load_dataset(f"imagefolder:{tmp_path / 'split'}")


# ---------------------------------------------------------------------------- built-in sets, names, Dataset

def test_digits_and_synthetic():
    digits = load_dataset("digits")
    assert digits.train_x.shape[1:] == (1, 8, 8) and len(digits.train_y) + len(digits.val_y) == 1797
    assert int(digits.train_x.max()) == 255
    a, b = load_dataset("synthetic", seed=1), load_dataset("synthetic", seed=2)
    assert a.train_x.shape == (1024, 3, 32, 32) and a.num_classes == 4
    assert not torch.equal(a.train_x, b.train_x)
    assert torch.equal(a.train_x, _load.make_synthetic(1).train_x)  # seeded


@pytest.mark.parametrize("name, message", [
    ("imagenet", "unknown dataset 'imagenet'; use one of auto, cifar10"),
    ("imagefolder", "imagefolder needs a path"),
    ("digits:/x", "takes no path"),
])
def test_bad_names(name, message):
    with pytest.raises(UserError, match=message):
        load_dataset(name)


def test_select_balances_relabels_and_resizes():
    ds = load_dataset("synthetic")
    sub = ds.select(classes=[3, 1], train_subset=10, val_subset=100, resolution=16, seed=0)
    assert sub.classes == ("pattern3", "pattern1") and sub.train_x.shape == (10, 3, 16, 16)
    assert sorted(sub.train_y.bincount().tolist()) == [5, 5]
    assert len(sub.val_y) == 100 and set(sub.val_y.tolist()) == {0, 1}
    assert sub.description["selection"]["classes"] == [3, 1] and sub.description["train_size"] == 10
    assert torch.equal(sub.train_x, ds.select(classes=[3, 1], train_subset=10, val_subset=100,
                                              resolution=16, seed=0).train_x)
    whole = ds.select(val_subset=10_000)  # more than there is: the whole split
    assert len(whole.val_y) == len(ds.val_y)
    assert ds.select() is ds
    with pytest.raises(UserError, match=r"classes = 9: synthetic has 4 classes"):
        ds.select(classes=9)
    with pytest.raises(UserError, match=r"at least 2 distinct class indices in \[0, 4\)"):
        ds.select(classes=[0, 7])


def test_dataset_checks_its_arrays():
    x = np.zeros((4, 3, 8, 8), np.uint8)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        Dataset.from_numpy("t", (x, [0, 1, 2, 0]), (x, [0, 1, 0, 1]), ["a", "b"])
    with pytest.raises(ValueError, match="uint8 N, C, S, S"):
        Dataset.from_numpy("t", (x.astype(np.float32), [0, 1, 1, 0]), (x, [0, 1, 0, 1]), ["a", "b"])
    ds = Dataset.from_numpy("t", (x + 51, [0, 1, 1, 0]), (x, [0, 1, 0, 1]), ["a", "b"])
    assert ds.mean == (0.2, 0.2, 0.2) and ds.std[0] < 1e-3
