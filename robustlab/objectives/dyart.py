"""DyART, dynamics-aware robust training (Xu et al., ICLR 2023), from the authors' code.

Soft margin ``phi_beta(x) = z_y - (1/beta) logsumexp_{k != y}(beta z_k)`` (``margin_beta``,
5 by default; a lower bound on the hard margin). For the points of the batch with
``phi_beta(x) > 0`` (correctly classified), closest boundary points ``x^`` of ``phi_beta`` are
found by the FAB boundary solver (:func:`robustlab.attacks.fab.boundary_search`: ``fab_steps``
iterations from a random start on the threat-norm sphere of radius ``start_radius`` = eps/2,
``alpha_max`` 0.1, overshoot ``eta`` 1.05, backward step ``beta`` 0.9, box-clipped, no
eps-ball limit), in eval mode with parameter gradients off. A point is kept if

1. the solver reached the far side, ``phi_beta(x^) <= 0``;
2. it is close to the level set, ``phi_beta(x^) > phi_min`` (-0.3);
3. (``first_order_check``) the largest perturbation coordinates point against the gradient:
   with ``delta = x^ - x``, ``g = grad_x phi_beta(x^)`` and ``J = {j : |delta_j| > top_ratio *
   max_i |delta_i|}`` (``top_ratio`` 0.8), the fraction of ``j`` in ``J`` with
   ``delta_j g_j < 0`` is at least ``align_min`` (0.9). This is the authors' Linf test, used
   unchanged for L2 (at an exact L2 solution ``delta`` is parallel to ``-g``);
4. ``R = |x^ - x|_p < r0``.

Weights ``w = exp(-alpha R) / |g|_q`` (q the dual norm), detached. The loss is
``L = CE(f(x), y) - lam * (1/N) * sum_kept w * phi_beta(x^; theta)`` with N the batch size;
the margin term is evaluated with fixed BatchNorm statistics (eval mode for that forward pass,
``margin_mode: train`` reproduces the authors' train-mode pass). During the first
``burn_in`` epochs (0-based ``state.epoch < burn_in``) the loss is plain cross-entropy.
Early exit (robustlab's, not the authors'; ``drop_factor`` 4, ``drop_after`` 5): only points
with ``R < r0`` enter the loss, so after ``drop_after`` FAB iterations a point with no verified
boundary point within ``drop_factor * r0`` stops searching and the others continue as a smaller
batch, unchanged. On the TRADES SmallCNN at eps 0.3 (r0 16/255) 95-99% of the points stop
there and an epoch costs about a third; every point whose full 20-iteration search ended
within r0 (94 points, 640 MNIST images, the TRADES SmallCNN before and after a DyART epoch and a
naturally trained one) had a crossing within 2.6 r0 after 5 iterations, and on 30 batches the
kept points, their radii and the parameter gradient of the loss were those of the full search
(relative differences <= 1e-6; ``bench/bench_train.py`` compares both, ``drop_factor: null``
runs every point for ``fab_steps``). Only the logged ``found`` fraction can change: a point
stopped before its first crossing is not found.
Only points that can pass the filter (``R < r0``, ``phi_beta > phi_min`` at the solver's
verification) get the gradient pass of the filter.
Warm starts (``warm_start``, off by default, experimental; robustlab's, not the authors'):
the perturbation ``x^ - x`` of every verified boundary point (kept for the loss or not) is
stored (float16) by dataset index; the next time that index comes up, its search starts from
``x + stored perturbation`` and runs ``warm_steps`` (5) FAB iterations instead of
``fab_steps``. Points are verified as before; a warm search never returns a point farther than
its start. The store is not checkpointed (a resumed run starts cold for one epoch), and it
assumes the same input every epoch (with crop/flip augmentation the stored perturbation belongs
to another view). Not the default, because on the TRADES SmallCNN (eps 0.3, r0 16/255) a warm
second epoch kept no point (cold: 1.9%). Not a bookkeeping bug: the points kept in epoch 1 were
pushed away by the margin term (their stored points were back on the clean side, phi_beta 2-8),
and the points near the boundary in epoch 2 had stored points far away (R 0.13-1.0); FAB moves
towards ``x`` by at most ~10-20% per iteration, so 5 iterations from a far stored point stay far,
while a random start at eps/2 reaches the near crossings.
Differences from the authors' code: per-sample FAB step weights (their solver used sample 0's
for the batch), eval-mode statistics in the margin term, no crash when no point is kept
(the loss is then CE), and L2 support.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.attacks.threat import ThreatModel, make_threat
from robustlab.objectives.base import (
    Logs,
    Objective,
    StepState,
    accuracy,
    check_choice,
    check_eps,
    check_range,
    eval_statistics,
    inner_max,
    register_objective,
)

__all__ = ["DyART", "BoundaryBatch", "soft_margin", "first_order_aligned"]


def soft_margin(logits: Tensor, y: Tensor, beta: float = 5.0) -> Tensor:
    """Per-sample ``z_y - (1/beta) logsumexp_{k != y}(beta z_k)``."""
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    others = (beta * logits).scatter(1, y[:, None], float("-inf"))
    return z_y - torch.logsumexp(others, dim=1) / beta


def first_order_aligned(
    delta: Tensor, grad: Tensor, top_ratio: float = 0.8, align_min: float = 0.9
) -> Tensor:
    """Per sample: do the largest coordinates of ``delta`` point against ``grad``?

    ``J = {j : |delta_j| > top_ratio * max |delta|}``; True where the fraction of ``J`` with
    ``delta_j * grad_j < 0`` is at least ``align_min`` (False for ``delta = 0``).
    """
    d = delta.flatten(1)  # (0, d) for an empty batch, where reshape(0, -1) fails
    g = grad.flatten(1)
    big = d.abs() > top_ratio * d.abs().amax(dim=1, keepdim=True)
    against = (d * g < 0) & big
    n_big = big.sum(dim=1)
    frac = against.sum(dim=1).to(d.dtype) / n_big.clamp_min(1).to(d.dtype)
    return (n_big > 0) & (frac >= align_min)


@dataclass
class BoundaryBatch:
    """Kept boundary points of a batch: ``index`` into the batch, ``x_hat``, detached ``weight``,
    ``radius`` R and counts of correct / found points (for logging)."""

    index: Tensor
    x_hat: Tensor
    weight: Tensor
    radius: Tensor
    n_correct: int
    n_found: int

    @property
    def count(self) -> int:
        return int(self.index.numel())

    @staticmethod
    def none(x: Tensor, n_correct: int, n_found: int) -> BoundaryBatch:
        """No point kept."""
        empty = torch.zeros(0, dtype=torch.long, device=x.device)
        return BoundaryBatch(empty, x[:0], x.new_zeros(0), x.new_zeros(0), n_correct, n_found)


@register_objective("dyart")
@dataclass
class DyART(Objective):
    """DyART. Defaults are the authors' CIFAR-10 Linf settings (r0 16/255, alpha 3, lam 1000)."""

    eps: float | str = 8 / 255
    norm: str = "linf"
    burn_in: int = 10
    margin_beta: float = 5.0
    lam: float = 1000.0
    alpha: float = 3.0
    r0: float | str = 16 / 255
    fab_steps: int = 20
    fab_alpha_max: float = 0.1
    fab_eta: float = 1.05
    fab_beta: float = 0.9
    fab_refine_steps: int = 0
    start_radius: float | str | None = None
    phi_min: float = -0.3
    first_order_check: bool = True
    top_ratio: float = 0.8
    align_min: float = 0.9
    margin_mode: str = "eval"
    warm_start: bool = False
    warm_steps: int = 5
    drop_after: int = 5
    drop_factor: float | None = 4.0
    _warm: dict[str, Tensor] | None = field(default=None, init=False, repr=False, compare=False)

    def validate(self) -> None:
        n = self.name
        self.eps = check_eps(n, "eps", self.eps)
        self.norm = str(self.norm).lower()
        check_choice(n, "norm", self.norm, ("linf", "l2"))
        check_range(n, "burn_in", self.burn_in, lo=0, integer=True)
        check_range(n, "margin_beta", self.margin_beta, lo=0.0, lo_open=True)
        check_range(n, "lam", self.lam, lo=0.0)
        check_range(n, "alpha", self.alpha, lo=0.0)
        self.r0 = check_eps(n, "r0", self.r0)
        check_range(n, "fab_steps", self.fab_steps, lo=1, integer=True)
        check_range(n, "fab_alpha_max", self.fab_alpha_max, 0.0, 1.0, lo_open=True)
        check_range(n, "fab_eta", self.fab_eta, lo=1.0)
        check_range(n, "fab_beta", self.fab_beta, 0.0, 1.0, lo_open=True)
        check_range(n, "fab_refine_steps", self.fab_refine_steps, lo=0, integer=True)
        if self.start_radius is None:
            self.start_radius = self.eps / 2
        else:
            self.start_radius = check_eps(n, "start_radius", self.start_radius)
        check_range(n, "phi_min", self.phi_min, hi=0.0)
        check_choice(n, "first_order_check", self.first_order_check, (True, False))
        check_range(n, "top_ratio", self.top_ratio, 0.0, 1.0, hi_open=True)
        check_range(n, "align_min", self.align_min, 0.0, 1.0)
        check_choice(n, "margin_mode", self.margin_mode, ("eval", "train"))
        check_choice(n, "warm_start", self.warm_start, (True, False))
        check_range(n, "warm_steps", self.warm_steps, lo=1, integer=True)
        check_range(n, "drop_after", self.drop_after, lo=0, integer=True)
        if self.drop_factor is not None:
            check_range(n, "drop_factor", self.drop_factor, lo=1.0)

    def threat(self) -> ThreatModel:
        return make_threat(self.norm, self.eps)

    def boundary_points(
        self, x: Tensor, y: Tensor, state: StepState, index: Tensor | None = None
    ) -> BoundaryBatch:
        """Closest boundary points of the correct samples, filtered and weighted (no grads);
        ``index`` (dataset indices) enables the warm starts."""
        threat = self.threat()
        phi = partial(soft_margin, beta=self.margin_beta)
        with inner_max(state.raw_model, self.attack_mode) as m:
            with torch.no_grad():
                correct = phi(m(x), y) > 0
            ci = correct.nonzero().squeeze(1)
            if ci.numel() == 0:
                return BoundaryBatch.none(x, 0, 0)
            res = self._search(m, x, y, ci, phi, threat, index, state)
            found = res.found  # verified by the solver: phi(x^) <= 0
            self._remember(index, ci, ci[found], (res.x_boundary - x[ci])[found])
            # Only points that can pass the filter get the gradient pass (the filter re-checks).
            cand = found & (res.phi_value > self.phi_min) & (res.distance < self.r0)
            idx = ci[cand]
            if idx.numel() == 0:  # correct points, but none close enough to the boundary
                return BoundaryBatch.none(x, ci.numel(), int(found.sum()))
            x_hat = res.x_boundary[cand].detach().requires_grad_(True)
            with torch.enable_grad():
                phi_hat = phi(m(x_hat), y[idx])
                (grad,) = torch.autograd.grad(phi_hat.sum(), x_hat)
        x_hat = x_hat.detach()
        delta = x_hat - x[idx]
        radius = threat.norm(delta)
        keep = (phi_hat.detach() <= 0) & (phi_hat.detach() > self.phi_min)
        keep &= radius < self.r0
        if self.first_order_check:
            keep &= first_order_aligned(delta, grad, self.top_ratio, self.align_min)
        gnorm = threat.dual_norm(grad)
        keep &= gnorm > 0
        weight = torch.exp(-self.alpha * radius) / gnorm.clamp_min(torch.finfo(x.dtype).tiny)
        return BoundaryBatch(
            idx[keep], x_hat[keep], weight[keep].detach(), radius[keep].detach(),
            int(ci.numel()), int(found.sum()),
        )  # fmt: skip

    def _search(self, m, x, y, ci, phi, threat, index, state):  # noqa: ANN001, ANN202
        """FAB boundary search for rows ``ci``. With ``warm_start`` and dataset indices, rows
        whose index kept a boundary point in an earlier step start from it (the stored
        perturbation added to today's input) and run ``warm_steps`` iterations instead of
        ``fab_steps``; every point is verified by the solver either way."""
        from robustlab.attacks.boundary import BoundaryResult, boundary_search

        drop = None if self.drop_factor is None else (self.drop_after, self.drop_factor * self.r0)
        kw = dict(
            restarts=1, alpha_max=self.fab_alpha_max, eta=self.fab_eta, beta=self.fab_beta,
            start_radius=self.start_radius, random_start=True, generator=state.generator,
            max_radius=None, refine_steps=self.fab_refine_steps, drop=drop,
        )  # fmt: skip
        warm = self._warm_rows(index, ci, x)
        if warm is None:
            return boundary_search(m, x[ci], y[ci], phi, threat, steps=self.fab_steps, **kw)
        has, delta = warm
        parts = {}
        for key, (rows, steps, init) in enumerate(
            ((~has, self.fab_steps, None), (has, self.warm_steps, delta))
        ):
            sel = rows.nonzero().squeeze(1)
            if sel.numel():
                xi = x[ci[sel]]
                x0 = None if init is None else xi + init[sel].to(xi.dtype)
                parts[key] = (sel, boundary_search(
                    m, xi, y[ci[sel]], phi, threat, steps=steps, x_init=x0, **kw
                ))  # fmt: skip
        out = BoundaryResult(
            x[ci].clone(), x.new_full((ci.numel(),), float("inf")),
            torch.zeros(ci.numel(), dtype=torch.bool, device=x.device), x.new_zeros(ci.numel()),
        )  # fmt: skip
        for sel, r in parts.values():
            out.x_boundary[sel], out.distance[sel] = r.x_boundary, r.distance
            out.found[sel], out.phi_value[sel] = r.found, r.phi_value
        return out

    def _warm_rows(self, index: Tensor | None, ci: Tensor, x: Tensor) -> tuple | None:
        """(has a stored point, stored perturbation) for rows ``ci``, or None (no warm start)."""
        if not self.warm_start or index is None:
            return None
        w = self._warm
        key = index[ci].long()
        if w is None or int(key.max()) >= w["has"].numel():
            size = max(int(key.max()) + 1, 0 if w is None else 2 * w["has"].numel())
            new = {
                "has": torch.zeros(size, dtype=torch.bool, device=x.device),
                "delta": torch.zeros(size, *x.shape[1:], dtype=torch.float16, device=x.device),
            }
            if w is not None:
                new["has"][: w["has"].numel()] = w["has"]
                new["delta"][: w["has"].numel()] = w["delta"]
            self._warm = w = new
        return w["has"][key], w["delta"][key]

    def _remember(self, index: Tensor | None, rows: Tensor, kept: Tensor, delta: Tensor) -> None:
        """Store the perturbations ``delta`` of rows ``kept`` (every verified boundary point,
        whether or not the filter keeps it for the loss); forget the other ``rows``."""
        if self._warm is None or index is None:
            return
        self._warm["has"][index[rows].long()] = False
        self._warm["has"][index[kept].long()] = True
        self._warm["delta"][index[kept].long()] = delta.to(torch.float16)

    def margin_term(self, raw_model: nn.Module, bb: BoundaryBatch, y: Tensor, n: int) -> Tensor:
        """``-(1/n) sum_kept w * phi_beta(x^; theta)`` (without ``lam``), differentiable."""
        if self.margin_mode == "eval":
            with eval_statistics(raw_model):
                logits = raw_model(bb.x_hat)
        else:
            logits = raw_model(bb.x_hat)
        phi = soft_margin(logits, y[bb.index], self.margin_beta)
        return -(bb.weight * phi).sum() / n

    def forward(
        self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor | None, state: StepState
    ) -> tuple[Tensor, Logs]:
        n = x.shape[0]
        bb = None if state.epoch < self.burn_in else self.boundary_points(x, y, state, index)
        logits = model(x)
        ce = F.cross_entropy(logits, y)
        logs: Logs = {"ce": ce.detach(), "acc": accuracy(logits, y)}
        if bb is None:
            logs.update(kept=0.0, burn_in=1.0)
            return ce, logs
        logs.update(burn_in=0.0, correct=bb.n_correct / n, found=bb.n_found / n, kept=bb.count / n)
        if bb.count == 0:  # no ``mean_R``/``margin_term`` keys: the loop averages present keys
            return ce, logs
        logs["mean_R"] = bb.radius.mean()
        term = self.margin_term(state.raw_model, bb, y, n)
        logs["margin_term"] = term.detach()
        return ce + self.lam * term, logs
