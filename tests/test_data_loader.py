"""DeviceLoader (seeded epochs, exact crop/flip augmentation, shards), class-balanced subsets
and load_data."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robustlab.data import (
    Augment,
    DeviceLoader,
    Split,
    class_balanced_subset,
    dataset_info,
    load_data,
    load_split,
)
from robustlab.errors import DataError


def _noise_split(n: int = 64, c: int = 3, size: int = 8, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, c, size, size), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % 10
    return Split(images, labels, dataset_info("cifar10"))


def _epoch(loader: DeviceLoader) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    return list(loader)


def test_batches_cover_split_once_and_match_labels():
    split = _noise_split(70)
    loader = DeviceLoader(split, batch_size=16, shuffle=True, seed=1)
    batches = _epoch(loader)
    assert len(batches) == len(loader) == 5
    idx = torch.cat([b[2] for b in batches])
    assert sorted(idx.tolist()) == list(range(70))
    for x, y, i in batches:
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 8, 8)
        assert torch.equal(y, split.labels[i])
        assert torch.equal(x, split.images[i].float() / 255)
    dl = DeviceLoader(split, batch_size=16, drop_last=True)
    assert len(dl) == 4 and all(b[0].shape[0] == 16 for b in dl)
    plain = DeviceLoader(split, batch_size=32, shuffle=False)
    assert torch.equal(next(iter(plain))[2], torch.arange(32))


def test_seeded_reproducible_epochs():
    split = _noise_split(50)
    aug = Augment(crop_padding=2, hflip=True)

    def run(seed: int, epoch: int | None = None):
        loader = DeviceLoader(split, 8, augment=aug, seed=seed)
        if epoch is not None:
            loader.set_epoch(epoch)
        return _epoch(loader)

    a, b, c = run(3), run(3), run(4)
    for (xa, _, ia), (xb, _, ib) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ia, ib)
    assert not torch.equal(torch.cat([t[2] for t in a]), torch.cat([t[2] for t in c]))
    loader = DeviceLoader(split, 8, augment=aug, seed=3)
    first, second = _epoch(loader), _epoch(loader)  # iterating again moves to epoch 1
    assert not torch.equal(first[0][2], second[0][2])
    again = run(3, epoch=1)
    assert all(torch.equal(s[0], t[0]) for s, t in zip(second, again, strict=True))


@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_augmentation_is_an_exact_crop_and_flip(mode):
    pad = 2
    split = _noise_split(64, size=8)
    loader = DeviceLoader(split, 64, augment=Augment(pad, hflip=True, padding_mode=mode), seed=0)
    x, _, idx = next(iter(loader))
    assert x.dtype == torch.float32 and x.shape == (64, 3, 8, 8)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    padded = F.pad(split.images.float() / 255, (pad,) * 4, mode=mode)
    seen_offsets, flips = set(), 0
    for k in range(64):
        src = padded[idx[k]]
        matches = [
            (oy, ox, flip)
            for oy in range(2 * pad + 1)
            for ox in range(2 * pad + 1)
            for flip in (False, True)
            if torch.equal(
                x[k],
                src[:, oy : oy + 8, ox : ox + 8].flip(-1)
                if flip
                else src[:, oy : oy + 8, ox : ox + 8],
            )
        ]
        assert len(matches) == 1, f"sample {k} is not exactly one crop/flip of its source"
        seen_offsets.add(matches[0][:2])
        flips += matches[0][2]
    assert len(seen_offsets) > 10 and 16 <= flips <= 48


def test_augment_without_flip_and_bad_arguments():
    split = _noise_split(16)
    x, _, i = next(iter(DeviceLoader(split, 16, augment=Augment(0, hflip=False))))
    assert torch.equal(x, split.images[i].float() / 255)
    with pytest.raises(DataError, match="padding_mode"):
        Augment(padding_mode="wrap")
    with pytest.raises(DataError, match="batch_size"):
        DeviceLoader(split, 0)
    with pytest.raises(DataError, match="rank"):
        DeviceLoader(split, 4, rank=2, world_size=2)


@pytest.mark.parametrize("n, drop_last", [(40, False), (43, False), (43, True)])
def test_distributed_shards_partition_one_permutation(n, drop_last):
    split = _noise_split(n)
    world = 4
    shards = []
    for rank in range(world):
        loader = DeviceLoader(split, 4, seed=7, rank=rank, world_size=world, drop_last=drop_last)
        loader.set_epoch(2)
        shards.append(torch.cat([b[2] for b in loader]))
    lengths = {len(s) for s in shards}
    assert len(lengths) == 1  # every rank runs the same number of steps
    everything = torch.cat(shards).tolist()
    if drop_last:
        assert len(set(everything)) == len(everything) == world * (n // world // 4 * 4)
    else:
        assert set(everything) == set(range(n))
        assert len(everything) == world * -(-n // world)
    single = DeviceLoader(split, n, seed=7)
    single.set_epoch(2)
    perm = next(iter(single))[2]
    assert torch.equal(shards[1][:4], perm[1::world][:4])


def test_default_augment_follows_the_dataset():
    from robustlab.data import default_augment

    assert default_augment(dataset_info("mnist")) is None
    assert default_augment(dataset_info("cifar10")) == Augment(4, hflip=True)
    assert default_augment(dataset_info("svhn")) == Augment(4, hflip=False)


def test_class_balanced_subset():
    labels = torch.arange(1000) % 10
    idx = class_balanced_subset(labels, 105, seed=0)
    counts = torch.bincount(labels[idx], minlength=10)
    assert counts.sum() == 105 and counts.min() == 10 and counts.max() == 11
    assert torch.equal(idx, class_balanced_subset(labels, 105, seed=0))
    assert not torch.equal(idx, class_balanced_subset(labels, 105, seed=1))
    assert torch.equal(idx, idx.sort().values) and len(set(idx.tolist())) == 105
    skewed = torch.cat([torch.zeros(5, dtype=torch.long), torch.ones(100), torch.full((100,), 2)])
    counts = torch.bincount(skewed.long()[class_balanced_subset(skewed, 65, seed=0)])
    assert counts.tolist() == [5, 30, 30]
    with pytest.raises(DataError, match="cannot take 300"):
        class_balanced_subset(skewed, 300)


def test_load_data_holds_out_a_balanced_validation_set():
    bundle = load_data("mnist-mini", n_val=1000, n_train=2000, n_test=500, seed=3)
    assert bundle.val is not None and bundle.info.name == "mnist-mini"
    assert bundle.val.class_counts().tolist() == [100] * 10
    assert bundle.train.class_counts().tolist() == [200] * 10
    assert bundle.test.class_counts().tolist() == [50] * 10
    full = load_split("mnist-mini", "train")
    rows = {bytes(img.numpy()) for img in full.images}
    val_rows = {bytes(img.numpy()) for img in bundle.val.images}
    train_rows = {bytes(img.numpy()) for img in bundle.train.images}
    assert val_rows <= rows and train_rows <= rows and not (val_rows & train_rows)
    again = load_data("mnist-mini", n_val=1000, n_train=2000, n_test=500, seed=3)
    assert torch.equal(again.train.images, bundle.train.images)
    assert load_data("mnist-mini").val is None
    with pytest.raises(DataError, match="only 9000 are left"):
        load_data("mnist-mini", n_val=1000, n_train=9500)
