"""Device-resident batching: a split lives on the device as one uint8 tensor; each batch is
gathered, converted to float in [0, 1] and augmented (random crop with padding, horizontal
flip) by a single batched indexing operation, with seeded, reproducible epochs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from robustlab.data.convert import to_float
from robustlab.data.info import DatasetInfo, Split
from robustlab.errors import DataError

__all__ = ["Augment", "DeviceLoader", "default_augment", "epoch_seed", "pad_images"]


@dataclass(frozen=True)
class Augment:
    """Training augmentation: random crop of the original size from the image padded by
    ``crop_padding`` pixels on each side (``padding_mode`` "constant" = zeros, as in the usual
    ``RandomCrop(32, padding=4)``, or "reflect"), then a horizontal flip with probability 1/2
    when ``hflip``."""

    crop_padding: int = 4
    hflip: bool = True
    padding_mode: str = "constant"

    def __post_init__(self) -> None:
        if self.crop_padding < 0:
            raise DataError(f"crop_padding must be >= 0, got {self.crop_padding}")
        if self.padding_mode not in ("constant", "reflect"):
            raise DataError(
                f"padding_mode must be 'constant' or 'reflect', got {self.padding_mode!r}"
            )


def default_augment(info: DatasetInfo) -> Augment | None:
    """The usual training augmentation for a dataset: none for the grayscale digit/clothing
    sets (MNIST, Fashion-MNIST), else a random crop with 4 pixels of zero padding, plus a
    horizontal flip where it preserves the label (``info.hflip``: not for SVHN digits)."""
    if info.shape[0] == 1:
        return None
    return Augment(crop_padding=4, hflip=info.hflip)


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A 63-bit generator seed derived from (seed, epoch, stream) without collisions between
    nearby values (NumPy's SeedSequence hashing)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(stream)])
    a, b = (int(v) for v in state.generate_state(2, dtype=np.uint32))
    return ((a << 32) | b) & 0x7FFF_FFFF_FFFF_FFFF


def pad_images(images: Tensor, pad: int, mode: str = "constant") -> Tensor:
    """uint8 images padded by ``pad`` pixels on each side: zeros, or mirrored ("reflect",
    the edge pixel not repeated), built with index_select so it works on uint8."""
    if pad == 0:
        return images
    h, w = images.shape[-2:]
    if mode == "constant":
        return torch.nn.functional.pad(images, (pad, pad, pad, pad))
    if pad >= min(h, w):
        raise DataError(f"reflect padding {pad} needs images larger than {pad} pixels")

    def reflect(n: int) -> Tensor:
        i = torch.arange(-pad, n + pad, device=images.device).abs()
        return torch.where(i >= n, 2 * (n - 1) - i, i)

    return images.index_select(2, reflect(h)).index_select(3, reflect(w))


class DeviceLoader:
    """Iterate over a :class:`Split` kept on ``device``, yielding ``(x, y, index)``.

    ``x`` is float (``dtype``) in [0, 1] of shape (B, C, H, W), ``y`` int64 labels and
    ``index`` the int64 positions of the samples in the split (for per-sample caches such as
    teacher logits). Epoch ``e`` shuffles with a generator seeded from (``seed``, ``e``), so
    every epoch is reproducible; iterating again moves on to the next epoch, and
    :meth:`set_epoch` chooses it explicitly (call it with the same value on every rank).

    With ``world_size > 1`` each ``rank`` gets every ``world_size``-th element of the same global
    permutation (padded by wrapping around unless ``drop_last``), so ranks never overlap within
    an epoch and all see the same number of batches.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        shuffle: bool = True,
        augment: Augment | None = None,
        seed: int = 0,
        device: torch.device | str | None = None,
        drop_last: bool = False,
        *,
        rank: int = 0,
        world_size: int = 1,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if int(batch_size) < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise DataError(f"need 0 <= rank < world_size, got {rank=}, {world_size=}")
        if len(split) == 0:
            raise DataError(f"{split.info.name}: cannot iterate over an empty split")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        images = split.images.to(self.device, non_blocking=True).contiguous()
        pad = augment.crop_padding if augment is not None else 0
        # With augmentation, only the padded copy is kept; ``images`` is a view of its centre.
        self._padded = pad_images(images, pad, augment.padding_mode) if augment else images
        h, w = images.shape[-2:]
        self.images = self._padded[:, :, pad : pad + h, pad : pad + w] if pad else images
        del images
        self.labels = split.labels.to(self.device, non_blocking=True)
        self.info = split.info
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.augment = augment
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.rank, self.world_size = int(rank), int(world_size)
        self.dtype = dtype
        self.epoch = 0
        n = len(split)
        if self.drop_last:
            self.per_rank = n // self.world_size
        else:
            self.per_rank = -(-n // self.world_size)
        if self.per_rank == 0:
            raise DataError(f"{n} samples cannot be split over {self.world_size} ranks")

    @property
    def num_samples(self) -> int:
        """Number of samples this rank sees per epoch."""
        if self.drop_last:
            return (self.per_rank // self.batch_size) * self.batch_size
        return self.per_rank

    def __len__(self) -> int:
        if self.drop_last:
            return self.per_rank // self.batch_size
        return -(-self.per_rank // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch`` (its shuffle and augmentation)."""
        self.epoch = int(epoch)

    def _order(self, epoch: int) -> Tensor:
        n = self.labels.shape[0]
        if self.shuffle:
            g = torch.Generator(device="cpu")
            g.manual_seed(epoch_seed(self.seed, epoch, 0))
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        total = self.per_rank * self.world_size
        if total > n:  # pad by wrapping around so every rank gets the same count
            order = torch.cat([order, order[: total - n]])
        order = order[:total][self.rank :: self.world_size]
        return order.to(self.device)

    def _augment(self, idx: Tensor, gen: torch.Generator) -> Tensor:
        """Crop + flip of the samples ``idx`` as one gather from the padded uint8 tensor:
        flat index = sample + channel + (row offset + h) * Wp + column (mirrored if flipped)."""
        aug = self.augment
        assert aug is not None
        b, dev = idx.shape[0], self.device
        _, c, hp, wp = self._padded.shape
        h, w = self.images.shape[-2:]
        span = 2 * aug.crop_padding + 1
        oy = torch.randint(0, span, (b,), device=dev, generator=gen)
        ox = torch.randint(0, span, (b,), device=dev, generator=gen)
        cols = ox[:, None] + torch.arange(w, device=dev)
        if aug.hflip:
            flip = torch.rand(b, device=dev, generator=gen) < 0.5
            cols = torch.where(flip[:, None], cols.flip(1), cols)
        rows = (oy[:, None] + torch.arange(h, device=dev)) * wp
        chan = torch.arange(c, device=dev) * (hp * wp)
        base = idx * (c * hp * wp)
        flat = (base[:, None, None, None] + chan[None, :, None, None]) + rows[:, None, :, None]
        flat = flat + cols[:, None, None, :]
        return torch.take(self._padded, flat)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        epoch = self.epoch
        self.epoch += 1
        order = self._order(epoch)
        gen = None
        if self.augment is not None:
            gen = torch.Generator(device=self.device)
            gen.manual_seed(epoch_seed(self.seed, epoch, 1))
        stop = self.num_samples
        for start in range(0, stop, self.batch_size):
            idx = order[start : min(start + self.batch_size, stop)]
            x = self._augment(idx, gen) if gen is not None else self.images[idx]
            x = to_float(x)  # uint8 -> float32 in one pass
            yield x if self.dtype == torch.float32 else x.to(self.dtype), self.labels[idx], idx
