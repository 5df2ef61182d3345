"""Projection onto a hyperplane intersected with the [0, 1] box, in the Linf, L2 or L1 norm.

One job: the exact per-row projection FAB's steps need, ``min ||delta|| s.t. <w, delta> = c,
0 <= p + delta <= 1`` (water filling for Linf and L2, a greedy fill for L1). Used by the boundary
solver (:mod:`robustlab.attacks.boundary`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from robustlab.attacks.threat import ThreatModel
from robustlab.errors import RobustlabError

__all__ = ["project_hyperplane_box"]


def project_hyperplane_box(threat: ThreatModel, p: Tensor, w: Tensor, c: Tensor) -> Tensor:
    """Minimal-norm ``delta`` with ``<w, delta> = c`` and ``p + delta`` in [0, 1], per row.

    ``p`` and ``w`` are (N, d), ``c`` is (N,); the norm is the threat model's (Linf, L2 or L1).
    Where the hyperplane does not meet the box, returns the box point that gets closest to it
    (every coordinate pushed to its bound in the direction that moves ``<w, delta>`` to ``c``).
    """
    sgn = torch.sign(c)[:, None]
    direction = sgn * torch.sign(w)  # which way each coordinate moves
    room = torch.where(direction > 0, 1.0 - p, p).clamp_min(0.0)  # distance to the box bound
    a = w.abs()
    target = c.abs()
    if threat.p == math.inf or threat.p == 2.0:
        mag = _water_fill(a, room, target, linf=threat.p == math.inf)
    elif threat.p == 1.0:
        mag = _greedy_fill(a, room, target)
    else:  # pragma: no cover - make_threat only builds the three norms above
        raise RobustlabError(f"FAB has no hyperplane projection for the {threat.name} norm")
    return direction * mag


def _water_fill(a: Tensor, room: Tensor, target: Tensor, linf: bool) -> Tensor:
    """Magnitudes ``m_i = min(t r_i, room_i)``, smallest ``t`` with ``sum a_i m_i = target``.

    KKT conditions of the projection: for Linf every moving coordinate moves by the same amount
    ``t`` (``r_i = 1``); for L2 coordinate ``i`` moves by ``t |w_i|`` (``r_i = |w_i|``); both until
    the box stops them at ``room_i``. ``g(t) = sum a_i m_i(t)`` is piecewise linear, concave and
    non-decreasing with breakpoints ``room_i / r_i``. Newton's method from ``t = 0`` climbs it
    monotonically and lands exactly on the root once it reaches the root's linear piece (each
    step passes at least one breakpoint), which takes a few steps in practice; rows that need
    more are solved exactly by sorting the breakpoints (CPU sorts are slow: Newton is several
    times faster there). On accelerators every row is solved by sorting, without host syncs.
    """
    active = a > 0
    r = active.to(a.dtype) if linf else a
    ar, au = a * r, a * room
    bp = torch.where(active, room / torch.where(active, r, torch.ones_like(r)), torch.zeros_like(a))
    tgt = target[:, None]
    feasible = au.sum(1, keepdim=True) >= tgt
    if _sort_only(a.device):  # accelerators sort fast; this path never syncs with the host
        t = torch.where(feasible, _sorted_root(ar, au, bp, tgt), math.inf)
        return torch.minimum(torch.where(active, t * r, torch.zeros_like(r)), room)
    t = torch.zeros_like(tgt)
    done = ~feasible
    for _ in range(_NEWTON_STEPS):
        sat = bp <= t
        c_sat = (au * sat).sum(1, keepdim=True)
        slope = (ar * ~sat).sum(1, keepdim=True)
        t_new = torch.maximum((tgt - c_sat) / slope.clamp_min(1e-30), t)
        done = done | ~((bp > t) & (bp < t_new)).any(1, keepdim=True)  # same linear piece
        t = t_new
        if bool(done.all()):
            break
    t = torch.where(feasible, t, torch.full_like(t, math.inf))
    if not bool(done.all()):  # rare: many breakpoints before the root; solve those exactly
        rows = (~done).squeeze(1).nonzero().squeeze(1)
        t[rows] = _sorted_root(ar[rows], au[rows], bp[rows], tgt[rows])
    tr = torch.where(active, t * r, torch.zeros_like(r))
    return torch.minimum(tr, room)


_NEWTON_STEPS = 8


def _sort_only(device: torch.device) -> bool:
    """Solve projections by sorting alone (no Newton, no host sync): off the CPU."""
    return device.type != "cpu"


def _sorted_root(ar: Tensor, au: Tensor, bp: Tensor, tgt: Tensor) -> Tensor:
    """The root of ``g(t) = tgt`` (rows of (n, d), feasible) by sorting the breakpoints."""
    bp_sorted, order = bp.sort(dim=1)
    sat = au.gather(1, order).cumsum(1)  # contribution of the coordinates saturated so far
    slope_total = ar.sum(1, keepdim=True)
    slope_left = slope_total - ar.gather(1, order).cumsum(1)  # slope after each breakpoint
    k = (sat + bp_sorted * slope_left < tgt).sum(1, keepdim=True)  # breakpoints passed
    prev = (k - 1).clamp_min(0)
    sat_prev = torch.where(k > 0, sat.gather(1, prev), torch.zeros_like(tgt))
    slope_prev = torch.where(k > 0, slope_left.gather(1, prev), slope_total)
    return (tgt - sat_prev) / slope_prev.clamp_min(1e-30)


def _greedy_fill(a: Tensor, room: Tensor, target: Tensor) -> Tensor:
    """L1: move the coordinates with the largest ``|w_i|`` first, each up to its box bound."""
    a_sorted, order = a.sort(dim=1, descending=True)
    room_sorted = room.gather(1, order)
    contrib = a_sorted * room_sorted
    before = contrib.cumsum(1) - contrib  # reached before this coordinate moves
    left = (target[:, None] - before).clamp_min(0.0)
    mag_sorted = torch.minimum(room_sorted, left / a_sorted.clamp_min(1e-30))
    mag_sorted = torch.where(a_sorted > 0, mag_sorted, torch.zeros_like(mag_sorted))
    return torch.zeros_like(a).scatter(1, order, mag_sorted)
