"""Reduced-precision model passes inside attacks: when bf16 is used, and float32 confirmation.

One job: the ``precision`` option shared by APGD, FAB and Square. ``"float32"`` (the default
everywhere) runs the model as it is. ``"bf16"`` runs the attack's model passes (the gradient
passes of APGD and FAB, Square's queries) under bf16 autocast: on CPUs with AMX or AVX-512 BF16
and on recent GPUs they take 0.35-0.45x the float32 time at batches of 32 or more. The search
path then differs from float32's, so a bf16 run is not bit-identical to a float32 one, but no
success is ever reported on a bf16 pass alone: every claimed misclassification is re-checked in
float32 (:func:`confirm_wrong`), and the ensembles verify every returned point in float32.
``"auto"`` is bf16 where the device computes it natively (:func:`bf16_native`), else float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from robustlab.errors import RobustlabError

__all__ = ["PRECISIONS", "bf16_native", "check_precision", "confirm_wrong", "passes", "use_bf16"]

PRECISIONS = ("float32", "bf16", "auto")


def check_precision(precision: object) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a :class:`RobustlabError`."""
    if precision not in PRECISIONS:
        raise RobustlabError(f"precision must be float32, bf16 or auto, got {precision!r}")
    return str(precision)


def bf16_native(device: torch.device) -> bool:
    """Does ``device`` compute bf16 natively (CUDA with bf16, or a CPU with AMX or AVX-512
    BF16 as oneDNN reports it)?"""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether an attack with ``precision`` runs its passes in bf16 on ``device``."""
    return precision == "bf16" or (precision == "auto" and bf16_native(device))


@contextlib.contextmanager
def passes(bf16: bool, device: torch.device) -> Iterator[None]:
    """Model passes in this block run under bf16 autocast when ``bf16`` (cast the logits back
    with ``.float()`` after the block), as they are otherwise."""
    if not bf16:
        yield
        return
    with torch.autocast(device.type, dtype=torch.bfloat16):
        yield


@torch.no_grad()
def confirm_wrong(model: nn.Module, x: Tensor, y: Tensor, claimed: Tensor) -> Tensor:
    """``claimed`` (bool, N) where a float32 forward pass at ``x`` misclassifies too; rows not
    claimed stay False (one pass on the claimed rows only)."""
    rows = claimed.nonzero().squeeze(1)
    out = torch.zeros_like(claimed)
    if rows.numel():
        out[rows] = model(x[rows]).float().argmax(1) != y[rows]
    return out
