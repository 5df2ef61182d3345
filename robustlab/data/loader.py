"""Device-resident batching: a split lives on the device as one uint8 tensor; each batch is
gathered, converted to float in [0, 1] and augmented (random crop with padding, horizontal
flip) by a single batched indexing operation, with seeded, reproducible epochs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from robustlab.data.info import Split
from robustlab.errors import DataError

__all__ = ["Augment", "DeviceLoader", "epoch_seed"]


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


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A 63-bit generator seed derived from (seed, epoch, stream) without collisions between
    nearby values (NumPy's SeedSequence hashing)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(stream)])
    a, b = (int(v) for v in state.generate_state(2, dtype=np.uint32))
    return ((a << 32) | b) & 0x7FFF_FFFF_FFFF_FFFF


def _source_coords(offsets: Tensor, size: int, pad: int, mode: str) -> tuple[Tensor, Tensor | None]:
    """Source pixel coordinates (B, size) of a crop starting at ``offsets`` in the padded
    image, mapped back into the unpadded one; for zero padding also the validity mask."""
    coords = offsets[:, None] + torch.arange(size, device=offsets.device)[None, :] - pad
    if mode == "reflect":
        coords = coords.abs()
        coords = torch.where(coords >= size, 2 * (size - 1) - coords, coords)
        return coords, None
    valid = (coords >= 0) & (coords < size)
    return coords.clamp_(0, size - 1), valid


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
        self.images = split.images.to(self.device, non_blocking=True).contiguous()
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
        aug = self.augment
        assert aug is not None
        b = idx.shape[0]
        _, c, h, w = self.images.shape
        pad = aug.crop_padding
        dev = self.device
        oy = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=gen)
        ox = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=gen)
        rows, rvalid = _source_coords(oy, h, pad, aug.padding_mode)
        cols, cvalid = _source_coords(ox, w, pad, aug.padding_mode)
        if aug.hflip:
            flip = torch.rand(b, device=dev, generator=gen) < 0.5
            cols = torch.where(flip[:, None], cols.flip(1), cols)
            if cvalid is not None:
                cvalid = torch.where(flip[:, None], cvalid.flip(1), cvalid)
        # One gather: (B,1,1,1) sample x (1,C,1,1) channel x (B,1,H,1) row x (B,1,1,W) column.
        x = self.images[
            idx[:, None, None, None],
            torch.arange(c, device=dev)[None, :, None, None],
            rows[:, None, :, None],
            cols[:, None, None, :],
        ]
        x = x.to(self.dtype).div_(255.0)
        if rvalid is not None and cvalid is not None and pad > 0:
            mask = rvalid[:, None, :, None] & cvalid[:, None, None, :]
            x.mul_(mask)
        return x

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
            if gen is not None:
                x = self._augment(idx, gen)
            else:
                x = self.images[idx].to(self.dtype).div_(255.0)
            yield x, self.labels[idx], idx
