"""Decision-boundary dynamics (arXiv:2302.03015): the speed at which the boundary moves
relative to each point under a parameter velocity, in closed form, its finite-difference check,
and the conflicting-dynamics statistic (fractions of positive and negative speeds per margin bin).

With the margin function ``phi(x) = z_y - max_{k != y} z_k``, the margin ``R(x)`` is the
distance to the closest boundary point ``x^`` (``phi(x^) = 0``). Under a parameter velocity
``theta'``, ``dR/dt = <grad_theta phi(x^), theta'> / |grad_x phi(x^)|_q`` (q the dual norm).
The numerator of every point comes from one forward-mode JVP over the parameters
(``torch.func.jvp`` of ``functional_call``), the denominator from one input-gradient pass.
Positive speed: the boundary moves away from the point.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp

from robustlab.analysis._util import check_batch, eval_mode
from robustlab.attacks.fab import hard_margin
from robustlab.attacks.threat import ThreatModel
from robustlab.errors import RobustlabError
from robustlab.modes import model_mode

__all__ = [
    "hard_margin",
    "parameter_velocity",
    "objective_velocity",
    "boundary_speed",
    "sgd_step_copy",
    "finite_difference_speed",
    "conflicting_dynamics",
]

PhiFn = Callable[[Tensor, Tensor], Tensor]
Velocity = dict[str, Tensor]


def _buffers_snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {n: b.detach().clone() for n, b in model.named_buffers()}


def _restore_buffers(model: nn.Module, snap: dict[str, Tensor]) -> None:
    with torch.no_grad():
        for n, b in model.named_buffers():
            b.copy_(snap[n])


def parameter_velocity(model: nn.Module, loss_fn: Callable[[nn.Module], Tensor]) -> Velocity:
    """``theta' = -grad_theta loss_fn(model)`` for every trainable parameter.

    ``loss_fn`` receives the model and returns a scalar; it runs in the model's current mode.
    The model's buffers (BatchNorm statistics) and parameter ``.grad`` are left unchanged.
    """
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if not names:
        raise RobustlabError("the model has no trainable parameters")
    params = [p for _, p in model.named_parameters() if p.requires_grad]
    snap = _buffers_snapshot(model)
    try:
        loss = loss_fn(model)
        if not isinstance(loss, Tensor) or loss.dim() != 0:
            raise RobustlabError("the training loss must be a scalar tensor")
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    finally:
        _restore_buffers(model, snap)
    return {
        n: (-g.detach() if g is not None else torch.zeros_like(p))
        for n, p, g in zip(names, params, grads, strict=True)
    }


def objective_velocity(
    model: nn.Module,
    objective: Any,
    x: Tensor,
    y: Tensor,
    index: Tensor | None = None,
    state: Any = None,
    train_mode: bool = True,
    seed: int = 0,
) -> Velocity:
    """The velocity ``-grad_theta L`` of a registered training objective on one batch.

    ``objective`` is an objective instance or a name for
    ``robustlab.objectives.create_objective``; it is called as
    ``objective(model, x, y, index, state)`` like the training loop does, in train mode by
    default (BatchNorm statistics are restored afterwards), with a seeded ``state`` at the
    first epoch after the objective's ``burn_in`` (if it has one).
    """
    check_batch(x, y)
    if isinstance(objective, str):
        from robustlab.objectives import create_objective

        objective = create_objective(objective)
    if index is None:
        index = torch.arange(x.shape[0], device=x.device)
    if state is None:
        # After any burn-in (DyART trains naturally for its first ``burn_in`` epochs).
        epoch = int(getattr(objective, "burn_in", 0) or 0)
        state = _make_state(model, x.device, seed, epoch)

    def loss_fn(m: nn.Module) -> Tensor:
        return objective(m, x, y, index, state)[0]

    with model_mode(model, "train" if train_mode else "eval", param_grads=True):
        return parameter_velocity(model, loss_fn)


def _make_state(model: nn.Module, device: torch.device, seed: int, epoch: int = 0) -> Any:
    """A training-step state for calling an objective outside the training loop."""
    from robustlab.objectives import StepState

    gen = torch.Generator(device=device).manual_seed(int(seed))
    return StepState(raw_model=model, epoch=epoch, step=0, epochs=epoch + 1, generator=gen)


def boundary_speed(
    model: nn.Module,
    x_hat: Tensor,
    y: Tensor,
    velocity: Velocity,
    threat: ThreatModel,
    phi: PhiFn = hard_margin,
    x: Tensor | None = None,
) -> dict[str, Tensor]:
    """Closed-form boundary speed ``dR/dt`` at the boundary points ``x_hat`` (eval mode).

    Returns ``speed`` (N,), ``dphi_dt`` (the JVP ``<grad_theta phi(x^), theta'>``) and
    ``grad_norm`` (``|grad_x phi(x^)|_q``). Parameters missing from ``velocity`` do not move.

    The paper's formula ignores the [0, 1] box. Given the clean inputs ``x`` (Linf or L2), the
    result also holds ``speed_box`` [robustlab addition], the speed of the box-constrained
    margin: only coordinates of ``x^`` strictly inside the box can move, so the denominator
    becomes ``|g_F|_1`` (Linf) or ``R |g_F|_2 / |delta_F|_2`` (L2) with ``g_F`` and
    ``delta_F`` the gradient and the perturbation ``x^ - x`` on those free coordinates. Both
    agree when no coordinate is clipped; on MNIST, where most pixels sit at 0, ``speed_box``
    follows the finite difference more closely (see bench/bench_analysis.py).
    """
    check_batch(x_hat, y)
    unknown = set(velocity) - {n for n, _ in model.named_parameters()}
    if unknown:
        raise RobustlabError(f"velocity names unknown parameters: {sorted(unknown)[:3]}")
    y = y.to(x_hat.device)
    params = {n: p.detach() for n, p in model.named_parameters()}
    tangents = {n: velocity.get(n, torch.zeros_like(p)).to(p) for n, p in params.items()}
    buffers = dict(model.named_buffers())
    xh = x_hat.detach()
    with eval_mode(model):

        def phi_of_params(ps: dict[str, Tensor]) -> Tensor:
            return phi(functional_call(model, {**ps, **buffers}, (xh,)), y)

        _, dphi = jvp(phi_of_params, (params,), (tangents,))
        xr = xh.clone().requires_grad_(True)
        out = phi(functional_call(model, {**params, **buffers}, (xr,)), y)
        (gx,) = torch.autograd.grad(out.sum(), xr)
    gnorm = threat.dual_norm(gx)
    out = {
        "speed": (dphi / gnorm.clamp_min(1e-12)).detach(),
        "dphi_dt": dphi.detach(),
        "grad_norm": gnorm.detach(),
    }
    if x is not None and threat.name in ("linf", "l2"):
        out["speed_box"] = (dphi / _box_denominator(threat, x.to(xh), xh, gx)).detach()
    return out


def _box_denominator(threat: ThreatModel, x: Tensor, x_hat: Tensor, g: Tensor) -> Tensor:
    """``d phi / d R`` along the box-constrained optimal perturbation (see boundary_speed)."""
    tol = 1e-6
    free = ((x_hat > tol) & (x_hat < 1 - tol)).flatten(1).to(g.dtype)
    g_free = g.flatten(1) * free
    if threat.name == "linf":
        return g_free.abs().sum(1).clamp_min(1e-12)
    delta = (x_hat - x).flatten(1)
    r = delta.norm(dim=1)
    d_free = (delta * free).norm(dim=1)
    return (r * g_free.norm(dim=1) / d_free.clamp_min(1e-12)).clamp_min(1e-12)


def sgd_step_copy(model: nn.Module, loss_fn: Callable[[nn.Module], Tensor], lr: float) -> nn.Module:
    """A copy of ``model`` after one real ``torch.optim.SGD`` step of ``loss_fn`` (no momentum,
    no weight decay); buffers are restored so only the parameters move."""
    twin = copy.deepcopy(model)
    snap = _buffers_snapshot(twin)
    opt = torch.optim.SGD([p for p in twin.parameters() if p.requires_grad], lr=lr)
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(twin)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    _restore_buffers(twin, snap)
    return twin


def finite_difference_speed(
    model: nn.Module,
    loss_fn: Callable[[nn.Module], Tensor],
    margin_fn: Callable[[nn.Module], Tensor],
    lr: float,
    margins_before: Tensor | None = None,
) -> Tensor:
    """``(R_after - R_before) / lr`` after one real SGD step of ``loss_fn`` with rate ``lr``.

    ``margin_fn(model) -> (N,)`` computes the margins (for example with the boundary solver);
    the step is taken on a copy, so ``model`` is unchanged.
    """
    before = margin_fn(model) if margins_before is None else margins_before
    after = margin_fn(sgd_step_copy(model, loss_fn, lr))
    return ((after - before) / lr).detach()


def conflicting_dynamics(
    margins: np.ndarray | Tensor,
    speeds: np.ndarray | Tensor,
    eps: float,
    n_bins: int = 8,
    bin_width: float | None = None,
) -> dict[str, Any]:
    """Fractions of positive and negative boundary speeds per margin bin.

    Bins have width ``eps / 4`` by default, starting at 0; ``n_bins`` regular bins are followed
    by one overflow bin ``[n_bins * width, inf)``. Fractions are within each bin. Points with
    NaN margin or speed (not verified, misclassified) are ignored.
    """
    r = np.asarray(margins.cpu() if isinstance(margins, Tensor) else margins, dtype=np.float64)
    v = np.asarray(speeds.cpu() if isinstance(speeds, Tensor) else speeds, dtype=np.float64)
    if r.shape != v.shape:
        raise RobustlabError(f"{r.size} margins but {v.size} speeds")
    if not eps > 0:
        raise RobustlabError(f"eps must be positive, got {eps}")
    width = eps / 4 if bin_width is None else float(bin_width)
    ok = np.isfinite(r) & np.isfinite(v)
    r, v = r[ok], v[ok]
    edges = np.arange(n_bins + 1) * width
    which = np.minimum(np.floor(r / width).astype(np.int64), n_bins)
    count = np.bincount(which, minlength=n_bins + 1)
    pos = np.bincount(which, weights=(v > 0).astype(np.float64), minlength=n_bins + 1)
    neg = np.bincount(which, weights=(v < 0).astype(np.float64), minlength=n_bins + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac_pos = np.where(count > 0, pos / np.maximum(count, 1), np.nan)
        frac_neg = np.where(count > 0, neg / np.maximum(count, 1), np.nan)
    small = r < eps
    return {
        "bin_edges": np.append(edges, np.inf).tolist(),
        "count": count.tolist(),
        "frac_positive": frac_pos.tolist(),
        "frac_negative": frac_neg.tolist(),
        "n": int(r.size),
        "frac_negative_below_eps": float((v[small] < 0).mean()) if small.any() else float("nan"),
        "frac_points_below_eps_negative": float((small & (v < 0)).mean()) if r.size else 0.0,
    }
