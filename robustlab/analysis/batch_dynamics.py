"""Boundary dynamics of training batches (arXiv:2302.03015): the speeds each objective's
update gives the points of the batches that produce it, and the check of the closed-form speed
against a real SGD step.

The velocity ``theta' = -grad_theta L`` is taken on the weights passed in (the live, trained
weights of a run, never its EMA: the EMA does not take the step). Two ways to pair velocities
with points, chosen by ``velocity``:

- ``"exact"``: each batch's points are moved by the velocity of that same batch (the update
  that batch really produces);
- ``"mean"``: every point is moved by the mean velocity over all the batches (the expected
  update of an epoch's step, less noisy).

:func:`batch_dynamics` returns, per objective, the margins, the closed-form speeds and the
conflicting-dynamics statistic; margins are computed once and shared between objectives, so
two objectives are compared on the same points with the same batches.
:func:`speed_check` is claim D4: closed-form speeds against ``(R_after - R_before) / lr``
with both margins from the verified boundary solver.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from robustlab.analysis.dynamics import (
    Velocity,
    boundary_speed,
    conflicting_dynamics,
    objective_velocity,
    parameter_velocity,
    sgd_step_copy,
)
from robustlab.analysis.margins import minimum_margins
from robustlab.attacks.threat import make_threat
from robustlab.errors import RobustlabError

__all__ = ["VELOCITY_MODES", "batch_dynamics", "speed_agreement", "speed_check"]

#: How velocities are paired with points (see the module docstring).
VELOCITY_MODES = ("exact", "mean")

Batch = tuple[Tensor, Tensor]


def _mean_velocity(vs: Sequence[Velocity]) -> Velocity:
    return {k: sum(v[k] for v in vs) / len(vs) for k in vs[0]}


def batch_dynamics(
    model: nn.Module,
    objectives: dict[str, Any],
    batches: Sequence[Batch],
    eps: float,
    norm: str = "linf",
    velocity: str = "exact",
    margin_steps: int = 100,
    seed: int = 0,
) -> dict[str, Any]:
    """Margins and closed-form boundary speeds of the points of ``batches`` under each objective.

    ``objectives`` maps labels to objectives (instances or registered names, called at their
    first post-burn-in epoch); ``batches`` are ``(x, y)`` training batches. Returns ``margin``
    (float64 array over all points; NaN where not correct or not verified), per objective
    ``speed`` (NaN where no margin) and ``stats`` (:func:`conflicting_dynamics` plus overall
    fractions), and ``velocity`` (the mode used).
    """
    if velocity not in VELOCITY_MODES:
        modes = ", ".join(VELOCITY_MODES)
        raise RobustlabError(f"velocity must be one of {modes}, not {velocity!r}")
    if not batches:
        raise RobustlabError("batch_dynamics needs at least one batch")
    if not objectives:
        raise RobustlabError("batch_dynamics needs at least one objective")
    threat = make_threat(norm, eps)
    margins = [
        minimum_margins(model, x, y, norm=norm, steps=margin_steps, seed=seed, eps_hint=eps)
        for x, y in batches
    ]
    oks = [m["verified"] & m["correct"] for m in margins]
    pairs = zip(margins, oks, strict=True)
    r = torch.cat([torch.where(ok, m["margin"], math.nan) for m, ok in pairs])
    out: dict[str, Any] = {"margin": r.numpy(), "velocity": velocity, "objectives": {}}
    for label, obj in objectives.items():
        vs = [
            objective_velocity(model, obj, x, y, seed=seed + i) for i, (x, y) in enumerate(batches)
        ]
        if velocity == "mean":
            vs = [_mean_velocity(vs)] * len(vs)
        speeds = []
        for (x, y), m, ok, v in zip(batches, margins, oks, vs, strict=True):
            s = torch.full((x.shape[0],), math.nan, dtype=torch.float64)
            if ok.any():
                s[ok] = boundary_speed(model, m["x_hat"][ok], y[ok], v, threat)["speed"].double()
            speeds.append(s)
        sp = torch.cat(speeds).numpy()
        kept = _kept(model, obj, batches, seed)
        fin = np.isfinite(sp)
        stats = conflicting_dynamics(r.numpy(), sp, eps)
        stats["frac_negative_speed"] = float(np.mean(sp[fin] < 0)) if fin.any() else math.nan
        stats["frac_positive_speed"] = float(np.mean(sp[fin] > 0)) if fin.any() else math.nan
        out["objectives"][label] = {"speed": sp, "stats": stats}
        if kept is not None:
            out["objectives"][label]["kept"] = kept
    return out


def _kept(model: nn.Module, obj: Any, batches: Sequence[Batch], seed: int) -> np.ndarray | None:
    """For a margin objective (DyART: ``boundary_points``), which points its loss acts on, with
    the generator seeded as in :func:`objective_velocity` (the same random starts)."""
    if not hasattr(obj, "boundary_points"):
        return None
    from robustlab.analysis.dynamics import _make_state

    out = []
    for i, (x, y) in enumerate(batches):
        state = _make_state(model, x.device, seed + i, int(getattr(obj, "burn_in", 0) or 0))
        mask = torch.zeros(x.shape[0], dtype=torch.bool)
        mask[obj.boundary_points(x, y, state).index.cpu()] = True
        out.append(mask)
    return torch.cat(out).numpy()


def speed_agreement(
    closed: Tensor | np.ndarray, fd: Tensor | np.ndarray, strict: bool = True
) -> dict[str, float]:
    """Pearson and Spearman correlation and the median relative error ``|fd - c| / |fd|`` of
    closed-form speeds against finite differences (finite pairs only). Under 3 pairs: an
    error, or NaN values with ``strict=False``."""
    from robustlab.analysis.logits import spearman

    c = np.asarray(torch.as_tensor(closed).double().cpu())
    f = np.asarray(torch.as_tensor(fd).double().cpu())
    ok = np.isfinite(c) & np.isfinite(f) & (f != 0)
    c, f = c[ok], f[ok]
    if c.size < 3:
        if not strict:
            nan = math.nan
            return {"pearson": nan, "spearman": nan, "median_rel_error": nan, "n": int(c.size)}
        raise RobustlabError(f"need at least 3 finite speed pairs, got {c.size}")
    return {
        "pearson": float(np.corrcoef(c, f)[0, 1]),
        "spearman": float(spearman(c, f)),
        "median_rel_error": float(np.median(np.abs(f - c) / np.abs(f))),
        "n": int(c.size),
    }


def speed_check(
    model: nn.Module,
    loss_fn: Callable[[nn.Module], Tensor],
    x: Tensor,
    y: Tensor,
    norm: str = "linf",
    lr: float = 1e-3,
    margin_steps: int = 200,
    seed: int = 0,
    float64: bool = True,
) -> dict[str, Any]:
    """Claim D4: closed-form speeds against the finite difference of verified margins after one
    real SGD step of ``loss_fn`` with rate ``lr`` (on a float64 copy by default, so the margins'
    precision is not the limit). Returns :func:`speed_agreement` of the paper's formula (NaN
    under 3 usable points), ``box`` (the same for the box-aware ``speed_box`` of
    :func:`boundary_speed`; NaN for L1) and the
    arrays ``closed``, ``closed_box``, ``finite_difference`` and ``margin`` (points correct and
    verified before and after)."""
    m = copy.deepcopy(model).double() if float64 else copy.deepcopy(model)
    m.eval()
    x = x.to(next(m.parameters()).dtype)
    before = minimum_margins(m, x, y, norm=norm, steps=margin_steps, seed=seed)
    v = parameter_velocity(m, loss_fn)
    ok = before["verified"] & before["correct"]
    if not ok.any():
        raise RobustlabError("no correctly classified point with a verified margin")
    threat = make_threat(norm, 1.0)
    closed = torch.full((x.shape[0],), math.nan, dtype=torch.float64)
    closed_box = closed.clone()
    res = boundary_speed(m, before["x_hat"][ok], y[ok], v, threat, x=x[ok])
    closed[ok] = res["speed"].double()
    if "speed_box" in res:
        closed_box[ok] = res["speed_box"].double()
    after = minimum_margins(
        sgd_step_copy(m, loss_fn, lr), x, y, norm=norm, steps=margin_steps, seed=seed
    )
    ok &= after["verified"] & after["correct"]
    fd = torch.where(ok, (after["margin"] - before["margin"]) / lr, math.nan)
    closed = torch.where(ok, closed, math.nan)
    closed_box = torch.where(ok, closed_box, math.nan)
    return {
        **speed_agreement(closed, fd, strict=False),
        "box": speed_agreement(closed_box, fd, strict=False),
        "lr": lr,
        "closed": closed.numpy(),
        "closed_box": closed_box.numpy(),
        "finite_difference": fd.numpy(),
        "margin": torch.where(ok, before["margin"], math.nan).numpy(),
    }
