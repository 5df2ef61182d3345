"""The FAB boundary solver: the closest point where a scalar function of the logits crosses zero.

One job: find, per sample, the closest point (in a threat model's norm, inside the [0, 1] box)
where a scalar function of the logits crosses zero. This is the Fast Adaptive Boundary method of
Croce & Hein ("Minimally distorted adversarial examples with a fast adaptive boundary attack",
ICML 2020), generalised from "the decision boundary" to the zero level set of any per-sample
``phi(logits, y) -> (N,)`` that is positive on the clean side:

* ``phi=None``: the untargeted multi-class case. ``phi_l = z_y - z_l`` for every ``l != y``; each
  step linearises all of them and follows the one whose linearised boundary is closest (in the
  dual norm), as in the paper. The boundary is the decision boundary.
* ``targeted_class=t``: ``phi = z_y - z_t`` (FAB-T). With ``any_misclassification`` (what the
  FAB-T attack uses, as the reference AutoAttack's ``fab_base.py``: ``is_adv = pred != y``),
  steps still follow ``z_y - z_t`` but any misclassification of an iterate counts as a success
  (a point pushed towards ``t`` that lands in a third class is adversarial).
* any callable ``phi``: for example DyART's soft margin.

Each step projects the current iterate and the clean input onto the linearised boundary
intersected with the box (an exact, per-norm projection: Linf, L2 and L1 below), mixes the two
with a per-sample weight ``alpha = min(|d| / (|d| + |d_orig|), alpha_max)``, overshoots by
``eta``, and after a success steps back towards the clean input by ``beta``. The best (smallest
norm) success over all steps and restarts is kept. robustlab addition (not in the paper):
``refine_steps`` of a safeguarded regula-falsi line search on the segment between the clean input
and the best point, which removes the ~0.5% overshoot FAB leaves even on linear models. Every
returned point is re-evaluated before it is reported as found.

Verification with hysteresis: while searching, a point only counts as past the boundary when
``phi`` is below ``-guard``, with ``guard`` = :data:`GUARD_ULPS` units of rounding of the largest
logit; the final check accepts any ``phi`` on the far side. The same input gives logits that
differ by a few units of rounding with the batch it is evaluated in (BLAS kernels block the
reduction by batch size), so a point found exactly at the tie could flip back in the final,
differently batched pass (issue 11: boundary points of a linear model unverified on AVX-512).

``boundary_search`` never switches model modes (training code calls it on the model as it is);
the :class:`~robustlab.attacks.fab.FAB` and :class:`~robustlab.attacks.fab.FABTargeted` attacks
wrap it with ``attack_mode``; the hyperplane projections live in ``attacks/projection.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustlab.attacks.boundary_inputs import (
    PhiFn,
    as_vector,
    check_params,
    check_search_inputs,
)
from robustlab.attacks.precision import bf16_pass, check_precision, passes, use_bf16, widened
from robustlab.attacks.projection import project_hyperplane_box
from robustlab.attacks.threat import ThreatModel, make_threat, per_sample
from robustlab.errors import RobustlabError

# How far past the boundary (in units of float rounding of the largest |logit|) a point must be
# while searching. Measured on this project's models in float32, the same input's logits changed
# by up to ~10 such units between batch sizes 1..64 (lenet5 9.7, cifar_cnn 5.1, preact_resnet18
# 5.2; a linear layer 1-2); phi, a difference of logits, up to twice that. 64 leaves > 3x margin
# and moves a boundary point by 64 * 1.2e-7 relative to the logits' scale (float32).
GUARD_ULPS = 64

__all__ = ["BoundaryResult", "GUARD_ULPS", "PhiFn", "boundary_search", "hard_margin"]


@dataclass
class BoundaryResult:
    """Per-sample output of :func:`boundary_search` (all tensors have leading size N).

    ``x_boundary``: the closest verified point found (the clean input where none was found);
    ``distance``: its threat-norm distance to the clean input (0 where the clean input already
    has ``phi <= 0``, ``inf`` where nothing was found); ``found``: bool, True only where ``phi``
    evaluated at the returned point is on the far side (the prediction changed, for the
    classification cases); ``phi_value``: ``phi`` at the returned point (for ``phi=None`` the
    hard margin ``z_y - max_{k != y} z_k``).
    """

    x_boundary: Tensor
    distance: Tensor
    found: Tensor
    phi_value: Tensor


def hard_margin(logits: Tensor, y: Tensor) -> Tensor:
    """``z_y - max_{k != y} z_k`` per sample: negative iff the prediction is not ``y`` (the
    negated Carlini-Wagner :func:`~robustlab.attacks.core.margin_loss`, computed directly: one
    kernel fewer, the same values bit for bit, since IEEE rounding is symmetric)."""
    yy = y[:, None]
    return logits.gather(1, yy).squeeze(1) - logits.scatter(1, yy, float("-inf")).amax(1)


# --------------------------------------------------------------------------------------------
# Linearisation: value and input gradient of the (chosen) boundary function.
# --------------------------------------------------------------------------------------------


class _Problem:
    """What is being solved: the value/gradient of the boundary function and the success test."""

    def __init__(
        self,
        model: nn.Module,
        shape: tuple[int, ...],
        threat: ThreatModel,
        phi: PhiFn | None,
        targeted_class: Tensor | None,
        any_misclassification: bool = False,
        bf16: bool = False,
    ) -> None:
        self.model, self.shape, self.threat, self.bf16 = model, shape, threat, bf16
        self.phi, self.target = phi, targeted_class
        self.any_miss = any_misclassification and targeted_class is not None
        self.kind = (
            "scalar" if phi is not None else "targeted" if targeted_class is not None else "multi"
        )

    def _logits(self, xf: Tensor) -> Tensor:
        return self.model(xf.reshape(-1, *self.shape))

    def value(self, logits: Tensor, y: Tensor, t: Tensor | None) -> Tensor:
        """The reported boundary function at ``logits``."""
        if self.kind == "scalar":
            assert self.phi is not None
            return self.phi(logits, y)
        if self.kind == "targeted":
            assert t is not None
            return logits.gather(1, y[:, None]).squeeze(1) - logits.gather(1, t[:, None]).squeeze(1)
        return hard_margin(logits, y)

    def success(self, value: Tensor, guard: Tensor | float = 0.0) -> Tensor:
        """Far side of the boundary: ``phi <= -guard``; strictly below for the classification
        cases, so that a tie never counts as a changed prediction."""
        return value <= -guard if self.kind == "scalar" else value < -guard

    @torch.no_grad()
    def evaluate(self, xf: Tensor, y: Tensor, t: Tensor | None) -> Tensor:
        """The value the success test reads: the boundary function, or the hard margin
        (<= ``z_y - z_t``) when any misclassification counts."""
        return self._tested(self._logits(xf), y, t)

    def _tested(self, logits: Tensor, y: Tensor, t: Tensor | None) -> Tensor:
        """The boundary function, or the hard margin when any misclassification counts
        (FAB-T as the reference)."""
        return hard_margin(logits, y) if self.any_miss else self.value(logits, y, t)

    @staticmethod
    def _guard(logits: Tensor) -> Tensor:
        """``GUARD_ULPS`` units of rounding of each row's largest |logit| (module docstring)."""
        return GUARD_ULPS * torch.finfo(logits.dtype).eps * logits.detach().abs().amax(1)

    @torch.no_grad()
    def guarded(self, xf: Tensor, y: Tensor, t: Tensor | None) -> Tensor:
        """``phi + guard`` at ``xf``: the function the search drives below zero, so that a point
        counts only when past the boundary by more than the rounding that another batch layout
        could change; the final verification tests ``phi`` itself."""
        logits = self._logits(xf)
        return self._tested(logits, y, t) + self._guard(logits)

    def linearize(self, xf: Tensor, y: Tensor, t: Tensor | None) -> tuple[Tensor, Tensor]:
        """Value (n,) of ``phi + guard`` and input gradient (n, d) of the boundary function
        followed at ``xf`` (the guard is a constant offset: no gradient); under ``bf16`` this
        pass runs under bf16 autocast. FAB compares no loss values: its decisions are the
        float32 success tests, and the value's bf16 rounding only shifts the linearised
        boundary it projects onto, by that rounding over the gradient's dual norm."""
        xr = xf.detach().reshape(-1, *self.shape).requires_grad_(True)
        with torch.enable_grad():
            with passes(bf16_pass(self.bf16, xr), xr.device):
                logits = self.model(xr)
            logits = widened(logits)
            if self.kind != "multi":
                val = self.value(logits, y, t)
                (grad,) = torch.autograd.grad(val.sum(), xr)
                return val.detach() + self._guard(logits), grad.reshape(xf.shape)
            return self._closest_class(logits, xr, y)

    def _closest_class(self, logits: Tensor, xr: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Untargeted FAB: among ``phi_l = z_y - z_l`` (l != y) pick, per sample, the one whose
        linearised boundary is closest, ``|phi_l| / |grad phi_l|_q``. K-1 backward passes (one
        per other class, re-indexed per sample so none is wasted)."""
        n, k = logits.shape
        ar = torch.arange(k - 1, device=y.device)
        others = ar[None, :] + (ar[None, :] >= y[:, None]).long()  # (n, K-1): classes != y
        z_y = logits.gather(1, y[:, None])
        diffs = z_y - logits.gather(1, others)  # (n, K-1)
        grads = []
        for j in range(k - 1):
            (g,) = torch.autograd.grad(diffs[:, j].sum(), xr, retain_graph=j < k - 2)
            grads.append(g.reshape(n, -1))
        g_all = torch.stack(grads, 1)  # (n, K-1, d)
        vals = diffs.detach() + self._guard(logits)[:, None]
        dual = self.threat.dual_norm(g_all.reshape(n * (k - 1), -1)).reshape(n, k - 1)
        dist = vals.abs() / (dual + 1e-12)
        best = dist.argmin(1)
        val = vals.gather(1, best[:, None]).squeeze(1)
        grad = g_all[torch.arange(n, device=best.device), best]
        return val, grad


# ---- The solver. ----------------------------------------------------------------------------


def _sphere(threat: ThreatModel, x: Tensor, radius: Tensor, gen: torch.Generator | None) -> Tensor:
    """Random points on the threat-norm sphere of per-sample ``radius`` (no box)."""
    unit = make_threat(threat.name, 1.0)
    v = unit.sample_ball(x, gen)
    n = unit.norm(v).clamp_min(1e-12)
    return v * per_sample(radius / n, v)


@torch.no_grad()
def _num_classes(model: nn.Module, x: Tensor) -> int:
    return int(model(x[:1]).shape[1]) if x.shape[0] else 2


def boundary_search(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    phi: PhiFn | None,
    threat: ThreatModel,
    steps: int = 100,
    restarts: int = 1,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
    start_radius: float | Tensor | None = None,
    random_start: bool | None = None,
    generator: torch.Generator | None = None,
    max_radius: float | Tensor | None = None,
    targeted_class: Tensor | None = None,
    refine_steps: int = 8,
    x_init: Tensor | None = None,
    any_misclassification: bool = False,
    drop: tuple[int, float] | None = None,
    precision: str = "float32",
) -> BoundaryResult:
    """Closest point (threat norm, inside [0, 1]) where ``phi(model(.), y)`` reaches zero.

    Args:
        model: returns logits; used as it is (no mode switch, no parameter gradient written).
        x, y: clean inputs (N, ...) in [0, 1] and labels (N,).
        phi: per-sample ``phi(logits, y) -> (N,)``, positive on the clean side; ``None`` for the
            untargeted decision boundary (multi-class FAB).
        threat: supplies the norm (and its dual); its ``eps`` only sets the default start radius.
        steps, restarts: FAB iterations per restart and number of restarts.
        alpha_max, eta, beta: FAB's maximal bias towards the clean input, overshoot, and
            backward step after a success.
        start_radius: radius of the random starts on the threat-norm sphere; default (the
            paper's) ``min(best distance so far, eps) / 2`` per sample, where eps is
            ``max_radius`` if given else ``threat.eps``.
        random_start: True: every restart starts at a random point; False: none does; None
            (default, as in the paper): the first restart starts at ``x``, later ones randomly.
        generator: the random source of the starts.
        max_radius: if given, a point only counts as found within this distance (float or (N,)).
        targeted_class: (N,) target labels: solve ``phi = z_y - z_t`` (FAB-T); excludes ``phi``.
        x_init: (N, ...) where the first restart starts (a warm start, e.g. each sample's
            boundary point of an earlier call), clipped to [0, 1]; later restarts as usual.
        any_misclassification: with ``targeted_class``, count any misclassified iterate as a
            success (the reference FAB-T); ``phi_value`` is then the hard margin.
        refine_steps: regula-falsi steps on the segment from ``x`` to the best point (0 = plain
            FAB); each is one forward pass and keeps the point verified.
        drop: ``(k, radius)``: after ``k`` iterations, samples with no point within ``radius`` stop.
        precision: ``"bf16"`` linearises under bf16 autocast; every success test stays float32
            (:mod:`robustlab.attacks.precision`).

    The model is called as it is: in train mode BatchNorm layers update their running
    statistics on every forward and dropout makes ``phi`` random (verification then refers to
    one draw), so call it in eval mode, or with GroupNorm, unless that is intended.

    Returns:
        :class:`BoundaryResult`. Samples whose clean input already satisfies the success test get
        distance 0 and ``x_boundary = x``. The solver is batched (one backward per step for a
        scalar ``phi``, K-1 for the multi-class case) and does not synchronise with the host
        inside the loop.
    """
    check_params(steps, restarts, alpha_max, eta, beta)
    x, y, t_all = check_search_inputs(x, y, phi, threat, targeted_class)
    n = x.shape[0]
    max_r = as_vector(max_radius, n, x, "max_radius")
    start_r = as_vector(start_radius, n, x, "start_radius")
    ref_eps = max_r if max_r is not None else as_vector(threat.eps, n, x, "threat eps")
    assert ref_eps is not None
    bf16 = use_bf16(check_precision(precision), x.device)
    prob = _Problem(model, tuple(x.shape[1:]), threat, phi, t_all, any_misclassification, bf16)

    xf_all = x.reshape(n, -1)
    phi_clean = prob.evaluate(xf_all, y, t_all)
    if phi is None and targeted_class is None and _num_classes(model, x) < 2:
        raise RobustlabError("the decision boundary needs a model with at least 2 classes")
    if phi_clean.shape != (n,):
        raise RobustlabError(f"phi must return one value per sample, got {tuple(phi_clean.shape)}")
    done_clean = prob.success(phi_clean)
    best_x = xf_all.clone()
    best_d = torch.where(
        done_clean, torch.zeros_like(phi_clean), torch.full_like(phi_clean, math.inf)
    )

    idx = (~done_clean).nonzero().squeeze(1)
    if idx.numel() > 0:
        tt = t_all[idx] if t_all is not None else None
        runs = _Restarts(steps, restarts, alpha_max, eta, beta, random_start, generator, drop=drop)
        radius = start_r[idx] if start_r is not None else None
        if x_init is not None:
            runs.init = x_init.detach().reshape(n, -1)[idx].clamp(0.0, 1.0)
        bx, bd = runs.solve(
            prob, xf_all[idx], y[idx], tt, best_x[idx], best_d[idx], radius, ref_eps[idx]
        )
        best_x[idx], best_d[idx] = bx, bd
        if refine_steps > 0:  # only rows with a point to refine (a no-op on the others)
            fin = idx[torch.isfinite(bd)]
            if fin.numel():
                tf = t_all[fin] if t_all is not None else None
                bx, bd = best_x[fin], best_d[fin]
                bx, bd = _refine(prob, xf_all[fin], y[fin], tf, bx, bd, refine_steps)
                best_x[fin], best_d[fin] = bx, bd

    # Verify every returned point with a fresh forward pass (rows without one keep phi_clean).
    phi_final = phi_clean.clone()
    fin = torch.isfinite(best_d).nonzero().squeeze(1)
    if fin.numel():
        tf = t_all[fin] if t_all is not None else None
        phi_final[fin] = prob.evaluate(best_x[fin], y[fin], tf)
    found = torch.isfinite(best_d) & prob.success(phi_final)
    if max_r is not None:
        found &= best_d <= max_r
    best_x = torch.where(found[:, None], best_x, xf_all)
    best_d = torch.where(found, threat.norm(best_x - xf_all), torch.full_like(best_d, math.inf))
    phi_final = torch.where(found, phi_final, phi_clean)
    return BoundaryResult(best_x.reshape(x.shape), best_d, found, phi_final)


@dataclass
class _Restarts:
    """FAB's restarts: the first from the clean input (unless ``random_start``), later ones from
    random points on the threat-norm sphere of radius ``min(best, eps) / 2`` (or ``radius``)."""

    steps: int
    restarts: int
    alpha_max: float
    eta: float
    beta: float
    random_start: bool | None
    generator: torch.Generator | None
    init: Tensor | None = None  # start of the first restart (warm start)
    drop: tuple[int, float] | None = None  # (k, radius): early exit of far samples

    def solve(
        self,
        prob: _Problem,
        x0: Tensor,
        y: Tensor,
        t: Tensor | None,
        bx: Tensor,
        bd: Tensor,
        radius: Tensor | None,
        ref_eps: Tensor,
    ) -> tuple[Tensor, Tensor]:
        for r in range(self.restarts):
            use_rand = (r > 0) if self.random_start is None else bool(self.random_start)
            if r > 0 and not use_rand:
                break  # a deterministic restart would repeat the first one
            start = x0
            if r == 0 and self.init is not None:
                start = self.init
            elif use_rand:
                rad = radius if radius is not None else torch.minimum(bd, ref_eps) / 2
                start = (x0 + _sphere(prob.threat, x0, rad, self.generator)).clamp(0.0, 1.0)
            bx, bd = _fab_run(
                prob, x0, y, t, start, self.steps, self.alpha_max, self.eta, self.beta, bx, bd,
                self.drop,
            )  # fmt: skip
        return bx, bd


def _fab_run(
    prob: _Problem,
    x0: Tensor,
    y: Tensor,
    t: Tensor | None,
    start: Tensor,
    steps: int,
    alpha_max: float,
    eta: float,
    beta: float,
    best_x: Tensor,
    best_d: Tensor,
    drop: tuple[int, float] | None = None,
) -> tuple[Tensor, Tensor]:
    """One FAB restart from ``start``; returns the updated best points and distances."""
    threat = prob.threat
    xc = start
    if not torch.equal(start, x0):  # a random start may already be on the far side
        best_x, best_d = _keep_best(prob, x0, y, t, xc, best_x, best_d)
    rows, full = None, None
    for i in range(steps):
        if drop is not None and i == drop[0]:  # far samples stop, the others go on as a sub-batch
            rows, full = (best_d <= drop[1]).nonzero().squeeze(1), (best_x.clone(), best_d.clone())
            x0, y, xc, best_x, best_d = x0[rows], y[rows], xc[rows], best_x[rows], best_d[rows]
            t = t if t is None else t[rows]
        val, grad = prob.linearize(xc, y, t)
        # Linearised boundary through xc: val + <grad, z - xc> = 0. Project xc and x0 onto it
        # (one call on 2n rows: the projection is per row, half the calls of two).
        c_orig, n = -(val + (grad * (x0 - xc)).sum(1)), xc.shape[0]
        p_both, w_both = torch.cat([xc, x0]), torch.cat([grad, grad])
        d_both = project_hyperplane_box(threat, p_both, w_both, torch.cat([-val, c_orig]))
        d_cur, d_orig = d_both[:n], d_both[n:]
        norms = threat.norm(d_both)
        n_cur, n_orig = norms[:n], norms[n:]
        alpha = (n_cur / (n_cur + n_orig).clamp_min(1e-12)).clamp(0.0, alpha_max)[:, None]
        xc = ((1 - alpha) * (xc + eta * d_cur) + alpha * (x0 + eta * d_orig)).clamp(0.0, 1.0)
        hit = prob.success(prob.guarded(xc, y, t))
        dist = threat.norm(xc - x0)
        better = hit & (dist < best_d)
        best_x = torch.where(better[:, None], xc, best_x)
        best_d = torch.where(better, dist, best_d)
        xc = torch.where(hit[:, None], x0 + beta * (xc - x0), xc)  # backward step
    if full is not None:
        full[0][rows], full[1][rows] = best_x, best_d
        return full
    return best_x, best_d


def _keep_best(
    prob: _Problem, x0: Tensor, y: Tensor, t: Tensor | None, xc: Tensor, bx: Tensor, bd: Tensor
) -> tuple[Tensor, Tensor]:
    hit = prob.success(prob.guarded(xc, y, t))
    dist = prob.threat.norm(xc - x0)
    better = hit & (dist < bd)
    return torch.where(better[:, None], xc, bx), torch.where(better, dist, bd)


def _refine(
    prob: _Problem,
    x0: Tensor,
    y: Tensor,
    t: Tensor | None,
    best_x: Tensor,
    best_d: Tensor,
    steps: int,
) -> tuple[Tensor, Tensor]:
    """Illinois regula falsi for the crossing on the segment ``x0 + s (best_x - x0)``, s in [0, 1].

    It solves ``phi + guard = 0`` (:meth:`_Problem.guarded`), so the point it returns is past the
    boundary by the guard, not at a tie that rounding could undo. ``hi`` always holds a far-side
    point, so the result is never worse than ``best_x``.
    """
    has = torch.isfinite(best_d)
    d = torch.where(has[:, None], best_x - x0, torch.zeros_like(x0))
    lo = torch.zeros_like(best_d)
    hi = torch.ones_like(best_d)
    f_lo = prob.guarded(x0, y, t)
    f_hi = prob.guarded(x0 + d, y, t)
    has &= prob.success(f_hi)
    side = torch.zeros_like(best_d)  # +1: hi moved last, -1: lo moved last
    for _ in range(steps):
        denom = f_lo - f_hi
        s = lo + (f_lo / denom.clamp_min(1e-30)).clamp(0, 1) * (hi - lo)
        width = hi - lo
        s = torch.minimum(torch.maximum(s, lo + 1e-3 * width), hi - 1e-3 * width)
        f_s = prob.guarded((x0 + s[:, None] * d).clamp(0.0, 1.0), y, t)
        hit = prob.success(f_s) & has
        # Illinois: halve the stale end's value when the same end moves twice in a row.
        f_lo = torch.where(hit & (side > 0), f_lo / 2, f_lo)
        f_hi = torch.where(~hit & (side < 0), f_hi / 2, f_hi)
        hi, f_hi = torch.where(hit, s, hi), torch.where(hit, f_s, f_hi)
        lo, f_lo = torch.where(hit, lo, s), torch.where(hit, f_lo, f_s.clamp_min(1e-12))
        side = torch.where(hit, torch.ones_like(side), -torch.ones_like(side))
    x_new = (x0 + hi[:, None] * d).clamp(0.0, 1.0)
    d_new = prob.threat.norm(x_new - x0)
    improve = has & (d_new < best_d)
    return torch.where(improve[:, None], x_new, best_x), torch.where(improve, d_new, best_d)
