"""Reduced-precision model passes inside attacks: when bf16 is used, and float32 confirmation.

One job: the ``precision`` option shared by APGD, FAB and Square. ``"float32"`` (the default
everywhere) runs the model as it is. ``"bf16"`` runs the attack's model passes (the gradient
passes of APGD and FAB, Square's queries) under bf16 autocast: on CPUs with AMX or AVX-512 BF16
they took 0.4-0.6x the float32 (channels_last) time at 32 rows or more on the benchmark models
(``bench/bench_precision.py``), and on a CPU a pass of fewer than :data:`MIN_BF16_ROWS` rows
stays float32. The search path then differs from float32's, so a bf16 run is not bit-identical
to a float32 one, but no success is ever reported on a bf16 pass alone: every claimed
misclassification is re-checked in float32, and the ensembles verify every returned point in
float32. APGD (and Square) re-evaluate in float32 every iterate that bf16 calls misclassified
or whose bf16 margin is within rounding of the boundary (:func:`float32_rows`), and use the
float32 loss (margin) there: near the boundary the loss differences that APGD's step-size
control, its best-point choice and Square's acceptance compare are below bf16's resolution (a
CIFAR-10 point whose best reachable margin is -1e-4 fell to float32 APGD-T for 20 of 20 seeds,
to bf16 with bf16 losses for 10 of 20).
``"auto"`` is bf16 where the device computes it natively (:func:`bf16_native`), else float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from robustlab.errors import RobustlabError

__all__ = [
    "PRECISIONS",
    "bf16_native",
    "bf16_pass",
    "check_precision",
    "float32_rows",
    "passes",
    "undecided",
    "use_bf16",
    "widened",
]

# On a CPU, a bf16 pass over fewer rows than this is no faster than float32 (bench_precision.py
# on an AMX Xeon: bf16 / float32 0.8-1.1x at 4 rows, 1.2-2x at 1; 0.6-0.85x at 8).
MIN_BF16_ROWS = 8

# Rows whose bf16 margin is within this many bf16 epsilons (torch.finfo(torch.bfloat16).eps,
# 2^-7) times the row's largest |logit| are re-evaluated in float32: there, rounding can flip
# the prediction (the largest bf16 margin error measured on the benchmark models was 1.9 of them).
BAND_ULPS = 4.0

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


def bf16_pass(bf16: bool, x: Tensor) -> bool:
    """Whether a pass over the rows of ``x`` runs in bf16: ``bf16``, and on a CPU at least
    :data:`MIN_BF16_ROWS` rows."""
    return bf16 and (x.device.type != "cpu" or x.shape[0] >= MIN_BF16_ROWS)


def widened(t: Tensor) -> Tensor:
    """``t`` in float32 if it is in a half-precision dtype (an autocast output), else as it is
    (a float64 model keeps its precision)."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


@contextlib.contextmanager
def passes(bf16: bool, device: torch.device) -> Iterator[None]:
    """Model passes in this block run under bf16 autocast when ``bf16`` (cast the logits back
    with :func:`widened` after the block), as they are otherwise."""
    if not bf16:
        yield
        return
    with torch.autocast(device.type, dtype=torch.bfloat16):
        yield


@torch.no_grad()
def undecided(logits: Tensor, y: Tensor, margin: Tensor | None = None) -> Tensor:
    """Rows (bool, N) of bf16 ``logits`` whose prediction float32 must decide: those whose
    margin ``z_y - max_{k != y} z_k`` (``margin`` if already computed) is below
    :data:`BAND_ULPS` bf16 epsilons times the row's largest |logit|: misclassified, tied,
    or close enough that a float32 pass may be misclassified while the bf16 one is not."""
    z = logits.detach().float()
    if margin is None:
        z_y = z.gather(1, y[:, None]).squeeze(1)
        margin = z_y - z.scatter(1, y[:, None], float("-inf")).amax(1)
    return margin <= BAND_ULPS * torch.finfo(torch.bfloat16).eps * z.abs().amax(1)


@torch.no_grad()
def float32_rows(
    model: nn.Module | Callable[[Tensor], Tensor],
    x: Tensor,
    logits: Tensor,
    y: Tensor,
    margin: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The :func:`undecided` rows of bf16 ``logits`` (indices) and the float32 logits of a pass
    at ``x`` on those rows only."""
    rows = undecided(logits, y, margin).nonzero().squeeze(1)
    if rows.numel() == 0:
        return rows, torch.empty(0, logits.shape[1], device=logits.device)
    return rows, widened(model(x[rows]))
