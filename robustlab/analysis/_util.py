"""Small helpers shared by the analyses: batching, device handling, input checks."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor, nn

from robustlab.errors import RobustlabError
from robustlab.objectives.base import eval_statistics as eval_mode  # modes restored on exit

__all__ = ["batches", "model_device", "check_batch", "eval_mode", "to_numpy"]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameter-free model)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def batches(n: int, batch_size: int) -> Iterator[slice]:
    """Slices covering ``range(n)`` in chunks of ``batch_size``."""
    if batch_size <= 0:
        raise RobustlabError(f"batch_size must be positive, got {batch_size}")
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


def check_batch(x: Tensor, y: Tensor | None = None) -> None:
    """Raise a :class:`RobustlabError` unless ``x`` is a float batch and ``y`` matches it."""
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise RobustlabError("inputs must be a float tensor of shape (N, C, H, W) in [0, 1]")
    if y is not None:
        if not isinstance(y, Tensor) or y.dim() != 1 or y.is_floating_point():
            raise RobustlabError("labels must be a 1-D integer tensor")
        if y.shape[0] != x.shape[0]:
            raise RobustlabError(f"{x.shape[0]} inputs but {y.shape[0]} labels (lengths differ)")


def to_numpy(t: Tensor) -> np.ndarray:
    """Detach, move to CPU and convert to a float64 or int64 numpy array."""
    t = t.detach().cpu()
    return (t.double() if t.is_floating_point() else t.long()).numpy()
