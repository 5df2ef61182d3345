"""The one conversion of stored images to model inputs: uint8 (0..255) -> float in [0, 1].

One job: :func:`to_float` is used by the loader, evaluation, validation, the analyses and the
objectives' caches, so that every path divides the same way (``x / 255`` in float32).
"""

from __future__ import annotations

import torch
from torch import Tensor

from robustlab.errors import RobustlabError

__all__ = ["to_float"]


def to_float(
    images: Tensor, device: torch.device | str | None = None, check: bool = False
) -> Tensor:
    """uint8 images -> float32 in [0, 1] on ``device``; float images pass through (as float32).

    With ``check`` float images must lie in [0, 1] without NaN and other dtypes are refused
    (normalization belongs inside the model).
    """
    x = images.to(device, non_blocking=True) if device is not None else images
    if x.dtype == torch.uint8:
        return torch.div(x, 255.0)  # one pass, float32, a new tensor
    if not x.is_floating_point():
        raise RobustlabError(f"images must be uint8 or float in [0, 1], got dtype {x.dtype}")
    if check and x.numel():
        if float(x.min()) < 0.0 or float(x.max()) > 1.0 or bool(x.isnan().any()):
            raise RobustlabError(
                "float images must lie in [0, 1] without NaN (normalization belongs inside the "
                "model)"
            )
    return x.float()
