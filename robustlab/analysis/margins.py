"""Minimal-perturbation margins (paper D): per sample, the distance to the closest point of
the decision boundary in a threat model's norm, found by the FAB boundary solver and verified.

``R(x) = min |x^ - x|_p subject to phi(x^) = 0`` with ``phi = z_y - max_{k != y} z_k``. The
solver is :func:`robustlab.attacks.fab.boundary_search` on the multi-class decision boundary;
every point it returns is re-evaluated here: a margin is *verified* when the prediction at
``x^`` differs from ``y`` (the boundary was crossed) and ``x^`` lies in [0, 1]; its distance is
recomputed with the threat model's norm. Misclassified samples have margin 0.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from robustlab.analysis._util import batches, check_batch, model_device
from robustlab.analysis.dynamics import hard_margin
from robustlab.attacks.base import attack_mode, make_generator
from robustlab.attacks.threat import make_threat

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

    ``eps_hint`` sets the radius of random restarts (half of it, as FAB does). Returns
    ``margin`` (N,) float64 (0 when misclassified, NaN when no boundary point was verified),
    ``x_hat`` (the boundary points, ``x`` where none), ``phi`` (``phi`` at ``x_hat``),
    ``verified`` and ``correct`` (bool).
    """
    check_batch(x, y)
    from robustlab.attacks.fab import boundary_search

    threat = make_threat(norm, eps_hint if eps_hint else (0.3 if norm == "linf" else 1.0))
    dev = model_device(model)
    gen = make_generator(seed, dev)
    out: dict[str, list[Tensor]] = {
        k: [] for k in ("margin", "x_hat", "phi", "verified", "correct")
    }
    with attack_mode(model):
        if x.shape[0]:  # the solver holds K - 1 input gradients per sample: bound the batch
            with torch.no_grad():
                k = model(x[:1].to(dev)).shape[1]
            batch_size = max(1, min(batch_size, 2**24 // (max(1, k - 1) * x[0].numel())))
        for s in batches(x.shape[0], batch_size):
            xb, yb = x[s].detach().to(dev), y[s].to(dev).long()
            with torch.no_grad():
                correct = hard_margin(model(xb), yb) > 0
            res = boundary_search(
                model, xb, yb, None, threat, steps=steps, restarts=restarts, generator=gen
            )
            xh = res.x_boundary.detach()
            with torch.no_grad():
                phi = hard_margin(model(xh), yb)
            in_box = (xh >= 0).flatten(1).all(1) & (xh <= 1).flatten(1).all(1)
            verified = correct & res.found & (phi < 0) & in_box
            dist = threat.norm(xh - xb).double()
            margin = torch.where(verified, dist, torch.full_like(dist, math.nan))
            margin = torch.where(correct, margin, torch.zeros_like(margin))
            out["margin"].append(margin.cpu())
            out["x_hat"].append(
                torch.where(correct.reshape(-1, *[1] * (xb.dim() - 1)), xh, xb).cpu()
            )
            out["phi"].append(phi.double().cpu())
            out["verified"].append((verified | ~correct).cpu())
            out["correct"].append(correct.cpu())
    return {k: torch.cat(v) for k, v in out.items()}
