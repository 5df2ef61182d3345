"""Build ``mnist_mini.npz`` (the embedded ``mnist-mini`` dataset) from the official MNIST files.

Usage: ``python robustlab/data/embedded/build_mini.py --mnist-dir DIR [--seed 0]``

Takes a class-balanced, seeded slice of MNIST: 1,000 images per class from the official
training set and 200 per class from the official test set, kept in their original order,
with the indices into the official splits stored alongside (``*_source_index``). The MNIST
content MD5s are checked first, so the result is reproducible byte for byte (same seed, same
NumPy/zlib). After a rebuild, update ``MNIST_MINI_MD5`` in ``robustlab/data/embedded_data.py``.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np

from robustlab.data.checksum import md5_file
from robustlab.data.datasets import load_split
from robustlab.data.subsets import class_balanced_subset
from robustlab.io import atomic_write_bytes

PER_CLASS = {"train": 1000, "test": 200}


def build(mnist_dir: Path, out: Path, seed: int = 0) -> str:
    """Write the archive to ``out``; returns its MD5."""
    arrays: dict[str, np.ndarray] = {}
    for split, per_class in PER_CLASS.items():
        full = load_split("mnist", split, mnist_dir, verify=True)
        idx = class_balanced_subset(full.labels, 10 * per_class, seed=seed)
        arrays[f"{split}_images"] = full.images[idx].numpy()
        arrays[f"{split}_labels"] = full.labels[idx].numpy().astype(np.uint8)
        arrays[f"{split}_source_index"] = idx.numpy().astype(np.int32)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(out, buf.getvalue())
    out.chmod(0o644)  # package data: world-readable
    return md5_file(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mnist-dir", required=True, type=Path, help="folder with the MNIST IDX files")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("mnist_mini.npz"))
    args = ap.parse_args()
    print(f"{args.out}: md5 {build(args.mnist_dir, args.out, args.seed)}")


if __name__ == "__main__":
    main()
