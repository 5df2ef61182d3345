"""The dataset shipped inside the package: ``mnist-mini``, a class-balanced MNIST slice
(1,000 training and 200 test images per class), so examples run without any download."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robustlab.data.checksum import check_md5
from robustlab.errors import DataError

__all__ = ["MNIST_MINI_PATH", "MNIST_MINI_MD5", "load_mnist_mini"]

MNIST_MINI_PATH = Path(__file__).with_name("embedded") / "mnist_mini.npz"
MNIST_MINI_MD5 = "77a01542d9d641ac2deacbe0f60198bf"


def load_mnist_mini(split: str, verify: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 1, 28, 28) uint8 and labels (N,) int64 of ``mnist-mini``'s ``split``."""
    if not MNIST_MINI_PATH.is_file():
        raise DataError(f"{MNIST_MINI_PATH}: embedded dataset missing (broken installation?)")
    check_md5(MNIST_MINI_PATH, MNIST_MINI_MD5, verify=verify, what="file")
    try:
        with np.load(MNIST_MINI_PATH, allow_pickle=False) as z:
            images, labels = z[f"{split}_images"], z[f"{split}_labels"]
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{MNIST_MINI_PATH}: cannot read split {split!r} ({e})") from None
    return images, labels.astype(np.int64)
