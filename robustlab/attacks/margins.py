"""Per-sample minimum-norm margins (distance to the decision boundary) and the accuracy curve.

One job: turn the FAB boundary solver (:func:`robustlab.attacks.fab.boundary_search`) into
per-sample margins ``R(x) = min |x' - x|_p subject to the prediction at x' differing from y``,
each one backed by a verified point, and summarise them as robust accuracy against eps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustlab.attacks.base import attack_mode, check_inputs, check_labels, make_generator
from robustlab.attacks.fab import boundary_search, hard_margin
from robustlab.attacks.threat import make_threat
from robustlab.errors import RobustlabError

__all__ = ["MarginResult", "minimum_norm_margins", "robust_accuracy_curve"]


@dataclass
class MarginResult:
    """Per-sample margins (all tensors of leading size N, on the device of the inputs).

    ``margin``: the norm of the smallest perturbation found that changes the prediction
    (0 for misclassified clean points, ``inf`` where none was found: see ``found``);
    ``x_boundary``: that perturbed input (the clean input where none was found or needed);
    ``found``: a verified point exists (True for misclassified clean points);
    ``correct``: the clean prediction equals the label;
    ``phi``: the hard margin ``z_y - max_{k != y} z_k`` at ``x_boundary`` (negative where found).
    """

    margin: Tensor
    x_boundary: Tensor
    found: Tensor
    correct: Tensor
    phi: Tensor


def minimum_norm_margins(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    norm: str = "linf",
    steps: int = 100,
    restarts: int = 1,
    batch_size: int = 256,
    seed: int = 0,
    refine_steps: int = 8,
    start_radius: float | None = None,
    start_eps: float | None = None,
) -> MarginResult:
    """Minimal-perturbation margins in the ``norm`` ("linf", "l2" or "l1") by untargeted FAB.

    The model is put in eval mode without parameter gradients for the duration (its modes are
    restored). Every margin is an upper bound on the true distance to the boundary, because it
    is attained by a verified point; more ``steps``/``restarts`` can only tighten it.
    ``start_radius`` sets the radius of the random starts used by restarts after the first
    (default, as in FAB: ``min(best distance so far, start_eps) / 2`` with ``start_eps`` the
    box diameter unless given).
    """
    check_inputs(x, y)
    if int(batch_size) != batch_size or batch_size < 1:
        raise RobustlabError(f"batch_size must be a positive integer, got {batch_size!r}")
    y = y.to(device=x.device, dtype=torch.long)
    x = x.detach()
    n = x.shape[0]
    d = x[0].numel() if n else 1
    # The box diameter in this norm: the largest possible margin, so no eps limit applies.
    diameter = {"linf": 1.0, "l2": math.sqrt(d), "l1": float(d)}
    threat = make_threat(norm, 1.0)
    threat = make_threat(norm, start_eps or diameter[threat.name])
    margin = torch.empty(n, dtype=x.dtype, device=x.device)
    x_boundary = torch.empty_like(x)
    found = torch.empty(n, dtype=torch.bool, device=x.device)
    correct = torch.empty(n, dtype=torch.bool, device=x.device)
    phi = torch.empty(n, dtype=x.dtype, device=x.device)
    gen = make_generator(seed, x.device)
    with attack_mode(model):
        if n:  # the solver holds K - 1 input gradients per sample: bound the batch's memory
            with torch.no_grad():
                k = model(x[:1]).shape[1]
            batch_size = max(1, min(batch_size, 2**24 // (max(1, k - 1) * d)))
        for lo in range(0, n, batch_size):
            s = slice(lo, lo + batch_size)
            xb, yb = x[s], y[s]
            with torch.no_grad():
                logits = model(xb)
            check_labels(yb, logits.shape[1])
            clean = hard_margin(logits, yb)
            ok = clean > 0  # misclassified or tied: margin 0 at the clean point
            res = boundary_search(
                model,
                xb,
                yb,
                None,
                threat,
                steps=steps,
                restarts=restarts,
                generator=gen,
                refine_steps=refine_steps,
                start_radius=start_radius,
            )
            margin[s] = torch.where(ok, res.distance, 0.0)
            x_boundary[s] = torch.where(ok.reshape(-1, *[1] * (x.dim() - 1)), res.x_boundary, xb)
            found[s] = res.found | ~ok
            correct[s] = ok
            phi[s] = torch.where(ok, res.phi_value, clean)
    return MarginResult(margin, x_boundary, found, correct, phi)


def robust_accuracy_curve(margins: Tensor, eps_grid: Sequence[float] | Tensor) -> Tensor:
    """Fraction of samples with ``margin > eps`` for each eps of ``eps_grid`` (float64 tensor).

    A sample counts as robust at eps iff its margin exceeds eps (misclassified points have
    margin 0 and never count). Because each margin comes from an attack, it can only
    over-estimate the true distance to the boundary, so this curve is an UPPER BOUND on the true
    robust accuracy; it is non-increasing in eps.
    """
    m = torch.as_tensor(margins).detach().flatten().to(torch.float64)
    e = torch.as_tensor(eps_grid, dtype=torch.float64, device=m.device).flatten()
    if m.numel() == 0:
        raise RobustlabError("no margins given")
    if bool(torch.isnan(m).any()) or bool((m < 0).any()):
        raise RobustlabError("margins must be non-negative numbers (inf allowed)")
    return (m[None, :] > e[:, None]).to(torch.float64).mean(1)
