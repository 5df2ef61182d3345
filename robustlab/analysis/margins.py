"""Minimal-perturbation margins (arXiv:2302.03015) in the analyses' dict form: per sample, the
verified distance to the closest point of the decision boundary in a threat model's norm.

``R(x) = min |x^ - x|_p subject to phi(x^) = 0`` with ``phi = z_y - max_{k != y} z_k``. One
implementation: :func:`robustlab.attacks.margins.minimum_norm_margins` (the FAB boundary solver,
every point re-evaluated); this adapter runs it on the model's device and returns CPU tensors,
with NaN instead of ``inf`` where no boundary point was verified.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from robustlab.analysis._util import check_batch, model_device
from robustlab.attacks.margins import minimum_norm_margins

__all__ = ["minimum_margins"]


def minimum_margins(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    norm: str = "linf",
    steps: int = 100,
    restarts: int = 1,
    seed: int = 0,
    eps_hint: float | None = None,
    batch_size: int = 256,
) -> dict[str, Tensor]:
    """Verified minimal-perturbation margins of ``model`` at ``(x, y)`` (eval mode, CPU output).

    ``eps_hint`` caps the radius of random restarts (half of it, as FAB does). Returns
    ``margin`` (N,) float64 (0 when misclassified, NaN when no boundary point was verified),
    ``x_hat`` (the boundary points, ``x`` where none), ``phi`` (``phi`` at ``x_hat``),
    ``verified`` and ``correct`` (bool).
    """
    check_batch(x, y)
    dev = model_device(model)
    res = minimum_norm_margins(
        model,
        x.detach().to(dev),
        y.to(dev),
        norm=norm,
        steps=steps,
        restarts=restarts,
        batch_size=batch_size,
        seed=seed,
        start_eps=eps_hint if eps_hint else (0.3 if norm == "linf" else 1.0),
    )
    margin = torch.where(res.found, res.margin.double(), math.nan)
    return {
        "margin": margin.cpu(),
        "x_hat": res.x_boundary.cpu(),
        "phi": res.phi.double().cpu(),
        "verified": res.found.cpu(),
        "correct": res.correct.cpu(),
    }
