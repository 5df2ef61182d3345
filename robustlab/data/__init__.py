"""Datasets in their official formats, checksums, downloads and the device-resident loader.

``load_split(name, split, root)`` -> :class:`Split` (uint8 NCHW images, int64 labels, info);
``load_data(name, root, n_train, n_val, seed, n_test)`` -> :class:`DataBundle`;
``DeviceLoader(split, batch_size, shuffle, augment, seed, device, drop_last)`` yields
``(x, y, index)`` batches with x float in [0, 1].
"""

from robustlab.data.datasets import SPLITS, check_dataset, load_split, locate_dataset
from robustlab.data.download import download_dataset
from robustlab.data.info import (
    DataBundle,
    DatasetInfo,
    Split,
    available_datasets,
    canonical_name,
    dataset_info,
)
from robustlab.data.loader import Augment, DeviceLoader, default_augment
from robustlab.data.paths import default_data_root, resolve_data_root, user_cache_dir
from robustlab.data.subsets import class_balanced_subset, load_data

__all__ = [
    "SPLITS",
    "Augment",
    "DataBundle",
    "DatasetInfo",
    "DeviceLoader",
    "Split",
    "available_datasets",
    "canonical_name",
    "check_dataset",
    "class_balanced_subset",
    "dataset_info",
    "default_augment",
    "download_dataset",
    "default_data_root",
    "load_data",
    "load_split",
    "locate_dataset",
    "resolve_data_root",
    "user_cache_dir",
]
