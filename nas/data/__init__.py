"""Datasets for proxy training: CIFAR-10, image folders, Fashion-MNIST, digits and a synthetic task.

Every dataset is decoded once per process into uint8 tensors (image folders also into an ``.npy`` cache),
so trials share it. See ``docs/data.md``::

    from nas.data import load_dataset
    ds = load_dataset("auto")          # CIFAR-10 if found, else download, else digits (with a warning)
    print(ds.description)
"""
from .._paths import default_cache_dir, default_data_root
from ._dataset import Dataset
from ._load import DATASETS, load_dataset

__all__ = ["Dataset", "load_dataset", "DATASETS", "default_data_root", "default_cache_dir"]
