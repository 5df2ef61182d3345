"""Dataset descriptions and containers: ``DatasetInfo``, ``Split``, ``DataBundle`` and the table
of every dataset robustlab knows (classes, shape, normalization constants)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from robustlab.errors import DataError

__all__ = ["DatasetInfo", "Split", "DataBundle", "dataset_info", "available_datasets"]


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a training loop need to know about a dataset.

    ``shape`` is (C, H, W); ``mean``/``std`` are the per-channel training-set statistics of the
    images scaled to [0, 1] (models put them in their normalization layer); ``hflip`` says
    whether horizontal flips preserve the label (True for natural images, False for digits).
    ``classes`` holds the class names, or is empty when they are only known from the files
    (Tiny-ImageNet WordNet ids).
    """

    name: str
    num_classes: int
    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    hflip: bool
    classes: tuple[str, ...] = ()


@dataclass
class Split:
    """One split of a dataset: ``images`` uint8 (N, C, H, W), ``labels`` int64 (N,)."""

    images: Tensor
    labels: Tensor
    info: DatasetInfo

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(
                f"{self.info.name}: images must be uint8 (N, C, H, W), got "
                f"{self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise DataError(
                f"{self.info.name}: labels must be int64 of length {self.images.shape[0]}, got "
                f"{self.labels.dtype} {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, indices: Tensor) -> Split:
        """The samples at ``indices`` (a new Split sharing ``info``)."""
        indices = torch.as_tensor(indices, dtype=torch.long)
        return Split(self.images[indices], self.labels[indices], self.info)

    def class_counts(self) -> Tensor:
        """Number of samples of each class, shape (num_classes,)."""
        return torch.bincount(self.labels, minlength=self.info.num_classes)

    def channel_mean(self) -> Tensor:
        """Per-channel mean of the images scaled to [0, 1] (float64)."""
        n, _, h, w = self.images.shape
        total = self.images.sum(dim=(0, 2, 3), dtype=torch.int64).double()
        return total / (max(n, 1) * h * w * 255.0)


@dataclass
class DataBundle:
    """Training, held-out validation (from the training set; None when not asked) and test."""

    train: Split
    val: Split | None
    test: Split

    @property
    def info(self) -> DatasetInfo:
        return self.train.info


_DIGITS = tuple(str(i) for i in range(10))
_CIFAR10 = ("airplane automobile bird cat deer dog frog horse ship truck").split()
_FASHION = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_CIFAR100 = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus "
    "butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch "
    "crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo "
    "keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse "
    "mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy "
    "porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper "
    "snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television "
    "tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()
assert len(_CIFAR100) == 100

_MNIST_STATS = ((0.1307,), (0.3081,))

DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in [
        DatasetInfo("mnist", 10, (1, 28, 28), *_MNIST_STATS, hflip=False, classes=_DIGITS),
        DatasetInfo("mnist-mini", 10, (1, 28, 28), *_MNIST_STATS, hflip=False, classes=_DIGITS),
        DatasetInfo(
            "fashion-mnist", 10, (1, 28, 28), (0.2860,), (0.3530,), hflip=False, classes=_FASHION
        ),
        DatasetInfo(
            "cifar10",
            10,
            (3, 32, 32),
            (0.4914, 0.4822, 0.4465),
            (0.2470, 0.2435, 0.2616),
            hflip=True,
            classes=tuple(_CIFAR10),
        ),
        DatasetInfo(
            "cifar100",
            100,
            (3, 32, 32),
            (0.5071, 0.4865, 0.4409),
            (0.2673, 0.2564, 0.2762),
            hflip=True,
            classes=tuple(_CIFAR100),
        ),
        DatasetInfo(
            "svhn",
            10,
            (3, 32, 32),
            (0.4377, 0.4438, 0.4728),
            (0.1980, 0.2010, 0.1970),
            hflip=False,
            classes=_DIGITS,
        ),
        DatasetInfo(
            "tiny-imagenet",
            200,
            (3, 64, 64),
            (0.4802, 0.4481, 0.3975),
            (0.2770, 0.2691, 0.2821),
            hflip=True,
        ),
    ]
}

_ALIASES = {"cifar-10": "cifar10", "cifar-100": "cifar100", "fmnist": "fashion-mnist"}


def available_datasets() -> list[str]:
    """Names accepted by :func:`dataset_info` and the loaders."""
    return list(DATASETS)


def canonical_name(name: str) -> str:
    """The dataset's canonical name; raises :class:`DataError` for an unknown one."""
    key = str(name).strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise DataError(
            f"unknown dataset {name!r}; choose one of: {', '.join(available_datasets())}"
        )
    return key


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a dataset name (``mnist``, ``cifar10``, ...)."""
    return DATASETS[canonical_name(name)]


def with_classes(info: DatasetInfo, classes: tuple[str, ...]) -> DatasetInfo:
    """``info`` with class names read from the files."""
    return replace(info, classes=tuple(classes))
