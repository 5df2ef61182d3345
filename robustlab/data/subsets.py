"""Seeded class-balanced subsets and ``load_data``: a dataset's train / held-out validation /
test splits in one call."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import Tensor

from robustlab.data.datasets import load_split
from robustlab.data.info import DataBundle, Split
from robustlab.errors import DataError

__all__ = ["class_balanced_subset", "load_data"]


def _quotas(counts: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Per-class sample counts summing to ``n``, as equal as each class's size allows."""
    k = len(counts)
    quota = np.zeros(k, dtype=np.int64)
    remaining = n
    open_ = [c for c in range(k) if counts[c] > 0]
    while remaining > 0 and open_:
        share = remaining // len(open_)
        if share == 0:  # fewer samples left than classes: one each to randomly chosen classes
            for c in rng.permutation(open_)[:remaining]:
                quota[c] += 1
            break
        full = [c for c in open_ if counts[c] - quota[c] <= share]
        if full:  # small classes are taken whole; their unused share goes to the others
            for c in full:
                remaining -= counts[c] - quota[c]
                quota[c] = counts[c]
            open_ = [c for c in open_ if c not in full]
        else:
            quota[open_] += share
            remaining -= share * len(open_)
    return quota


def class_balanced_subset(labels: Tensor | np.ndarray, n: int, seed: int = 0) -> Tensor:
    """Indices (sorted, int64) of ``n`` samples with every class as equally represented as
    possible (``n // K`` each; the remainder goes to seeded random classes; a class with too few
    samples is taken whole and the others make up the difference). Same seed, same subset."""
    y = torch.as_tensor(labels).detach().cpu().numpy().astype(np.int64, copy=False)
    if y.ndim != 1:
        raise DataError(f"labels must be 1-D, got shape {tuple(y.shape)}")
    n = int(n)
    if n < 0 or n > y.shape[0]:
        raise DataError(f"cannot take {n} samples from a split of {y.shape[0]}")
    if y.size and y.min() < 0:
        raise DataError("labels must be non-negative class indices")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EB5E7]))
    counts = np.bincount(y) if y.size else np.zeros(0, dtype=np.int64)
    quota = _quotas(counts, n, rng)
    chosen = []
    for c, q in enumerate(quota):
        if q:
            members = np.flatnonzero(y == c)
            chosen.append(rng.choice(members, size=int(q), replace=False))
    out = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
    return torch.from_numpy(out.astype(np.int64))


def load_data(
    name: str,
    root: str | os.PathLike[str] | None = None,
    n_train: int | None = None,
    n_val: int = 0,
    seed: int = 0,
    n_test: int | None = None,
    *,
    verify: bool | None = None,
) -> DataBundle:
    """Train, validation and test splits of ``name``.

    The validation set (``n_val`` samples, class balanced) is held out from the official
    training set, and ``n_train`` (class balanced, None = all the rest) is drawn from what
    remains, so the two never overlap; ``n_test`` takes a class-balanced part of the test set.
    Every choice is seeded by ``seed``.
    """
    full = load_split(name, "train", root, verify=verify)
    test = load_split(name, "test", root, verify=verify)
    val: Split | None = None
    train = full
    if n_val:
        val_idx = class_balanced_subset(full.labels, n_val, seed)
        keep = torch.ones(len(full), dtype=torch.bool)
        keep[val_idx] = False
        val = full.subset(val_idx)
        train = full.subset(keep.nonzero().squeeze(1))
    if n_train is not None and n_train < len(train):
        train = train.subset(class_balanced_subset(train.labels, n_train, seed + 1))
    elif n_train is not None and n_train > len(train):
        raise DataError(
            f"{name}: asked for {n_train} training samples but only {len(train)} are left "
            f"after holding out {n_val} for validation"
        )
    if n_test is not None and n_test < len(test):
        test = test.subset(class_balanced_subset(test.labels, n_test, seed + 2))
    elif n_test is not None and n_test > len(test):
        raise DataError(f"{name}: asked for {n_test} test samples but the test set has {len(test)}")
    return DataBundle(train, val, test)
