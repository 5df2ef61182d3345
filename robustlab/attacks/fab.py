"""The FAB and FAB-T attacks (Croce & Hein, ICML 2020) on top of the boundary solver.

One job: eps-bounded and minimal-perturbation FAB / FAB-T as registered attacks. The solver
itself is :func:`robustlab.attacks.boundary.boundary_search` (its projections are in
:mod:`robustlab.attacks.projection`); both are re-exported here for the older import paths.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from robustlab.attacks.base import (
    Attack,
    attack_mode,
    check_inputs,
    check_labels,
    make_generator,
    register_attack,
    resolve_threat,
)
from robustlab.attacks.boundary import (  # noqa: F401 - re-exported (older import paths)
    BoundaryResult,
    PhiFn,
    _sphere,
    boundary_search,
    hard_margin,
)
from robustlab.attacks.boundary_inputs import check_params
from robustlab.attacks.precision import check_precision
from robustlab.attacks.projection import project_hyperplane_box  # noqa: F401 - re-exported
from robustlab.attacks.threat import ThreatModel
from robustlab.errors import RobustlabError

__all__ = [
    "BoundaryResult",
    "boundary_search",
    "project_hyperplane_box",
    "hard_margin",
    "FAB",
    "FABTargeted",
]


@register_attack("fab")
class FAB(Attack):
    """Untargeted FAB (Croce & Hein 2020): minimal perturbations, Linf, L2 or L1.

    As an eps-bounded attack, ``attack(model, x, y)`` returns the minimal point where its norm is
    at most eps and the clean input elsewhere; :meth:`minimal` returns the minimal points.
    ``precision="bf16"`` linearises under bf16 autocast, with float32 success tests
    (:mod:`robustlab.attacks.precision`).
    """

    name = "fab"

    def __init__(
        self,
        eps: float | str | Tensor | None = None,
        norm: str = "linf",
        threat: ThreatModel | None = None,
        *,
        steps: int = 100,
        restarts: int = 1,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        refine_steps: int = 8,
        seed: int | None = 0,
        precision: str = "float32",
    ) -> None:
        super().__init__(resolve_threat(threat, eps, norm), seed)
        check_params(steps, restarts, alpha_max, eta, beta)
        self.precision = check_precision(precision)
        self.steps, self.restarts = int(steps), int(restarts)
        self.alpha_max, self.eta, self.beta = alpha_max, eta, beta
        self.refine_steps = int(refine_steps)

    def _solve(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        gen: torch.Generator,
        target: Tensor | None = None,
        eps: Tensor | None = None,
    ) -> BoundaryResult:
        """Run the solver; ``eps`` (per sample of this batch) limits the points that count and
        sets the restart radius ``min(best, eps) / 2``; without it, the threat's eps only sets
        that radius."""
        return boundary_search(
            model,
            x,
            y,
            None,
            self.threat,
            steps=self.steps,
            restarts=self.restarts,
            alpha_max=self.alpha_max,
            eta=self.eta,
            beta=self.beta,
            generator=gen,
            targeted_class=target,
            refine_steps=self.refine_steps,
            max_radius=eps,
            any_misclassification=target is not None,  # FAB-T: as the reference's fab_base.py
            precision=self.precision,
        )

    def _checked_logits(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        with torch.no_grad():
            logits = model(x)
        check_labels(y, logits.shape[1])
        return logits

    def minimal(self, model: nn.Module, x: Tensor, y: Tensor) -> BoundaryResult:
        """Minimal adversarial perturbations (no eps limit), as a :class:`BoundaryResult`."""
        check_inputs(x, y)
        y = y.to(device=x.device, dtype=torch.long)
        with attack_mode(model):
            gen = make_generator(self.seed, x.device)
            return self._minimal(model, x.detach().clone(), y, gen)

    def _minimal(
        self, model: nn.Module, x: Tensor, y: Tensor, gen: torch.Generator
    ) -> BoundaryResult:
        self._checked_logits(model, x, y)
        return self._solve(model, x, y, gen)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        self._checked_logits(model, x, y)
        res = self._solve(model, x, y, generator, eps=self.threat.eps_vector(x))
        return torch.where(res.found.reshape(-1, *[1] * (x.dim() - 1)), res.x_boundary, x)


@register_attack("fab-t")
class FABTargeted(FAB):
    """FAB-T as in AutoAttack: targeted FAB towards each of the ``n_target_classes`` classes with
    the highest clean logits (besides the label), 100 steps and 1 restart per target. As in the
    reference (``fab_base.py``), an iterate counts as a success as soon as it is misclassified,
    into the target class or any other.

    The eps-bounded attack only keeps attacking points not yet broken within eps; :meth:`minimal`
    runs every target on every correctly classified point and keeps the closest.
    """

    name = "fab-t"

    def __init__(
        self,
        eps: float | str | Tensor | None = None,
        norm: str = "linf",
        threat: ThreatModel | None = None,
        *,
        n_target_classes: int = 9,
        **kwargs: Any,
    ) -> None:
        super().__init__(eps, norm, threat, **kwargs)
        if int(n_target_classes) != n_target_classes or n_target_classes < 1:
            raise RobustlabError(f"n_target_classes must be >= 1, got {n_target_classes!r}")
        self.n_target_classes = int(n_target_classes)
        # Targets side by side: at most this many (targets x points) rows per solver call.
        # None: 32 on a CPU (larger measured slower there), 4096 on an accelerator (launch-bound
        # at a few hundred rows: 8 targets in one call are 8x fewer kernel launches).
        self.max_batch_rows: int | None = None

    def _targets(self, logits: Tensor, y: Tensor) -> Tensor:
        """(N, K-1) other classes ordered by decreasing clean logit."""
        masked = logits.scatter(1, y[:, None], float("-inf"))
        return masked.argsort(1, descending=True)[:, : logits.shape[1] - 1]

    def _minimal(
        self, model: nn.Module, x: Tensor, y: Tensor, gen: torch.Generator
    ) -> BoundaryResult:
        logits = self._checked_logits(model, x, y)
        targets = self._targets(logits, y)
        n = x.shape[0]
        best_x = x.clone()
        best_d = torch.full((n,), math.inf, dtype=x.dtype, device=x.device)
        found = torch.zeros(n, dtype=torch.bool, device=x.device)
        for r in range(min(self.n_target_classes, targets.shape[1])):
            res = self._solve(model, x, y, gen, targets[:, r])
            better = res.found & (res.distance < best_d)
            best_x[better] = res.x_boundary[better]
            best_d = torch.where(better, res.distance, best_d)
            found |= res.found
        with torch.no_grad():
            margin = hard_margin(model(best_x), y)
        return BoundaryResult(best_x, best_d, found & (margin < 0) | (best_d == 0), margin)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        logits = self._checked_logits(model, x, y)
        targets = self._targets(logits, y)
        eps = self.threat.eps_vector(x)
        x_adv = x.clone()
        robust = hard_margin(logits, y) > 0
        n_t = min(self.n_target_classes, targets.shape[1])
        max_rows = self.max_batch_rows or (32 if x.device.type == "cpu" else 4096)
        r = 0
        while r < n_t:
            idx = robust.nonzero().squeeze(1)
            m = idx.numel()
            if m == 0:
                break
            # The first target alone on every point (it breaks most breakable ones), then the
            # following targets of the survivors side by side as one (k*m)-row batch, target-
            # major, at most max_batch_rows rows: on few points this saves per-step overhead
            # (TRADES SmallCNN, 4 points x 8 targets: 6.3 s -> 4.8 s), while batches of ~90
            # rows measured slower than one target at a time. Per point the first target in
            # order that lands within eps wins, as if they had been run one after another.
            k = 1 if r == 0 else max(1, min(n_t - r, max_rows // m))
            rep = (k,) + (1,) * (x.dim() - 1)
            res = self._solve(
                model,
                x[idx].repeat(rep),
                y[idx].repeat(k),
                generator,
                targets[idx, r : r + k].T.reshape(-1),
                eps[idx].repeat(k),
            )
            found = res.found.reshape(k, m)  # within eps[idx]
            ok = found.any(0)
            first = found.to(torch.uint8).argmax(0)
            xb = res.x_boundary.reshape(k, m, *x.shape[1:])[first, torch.arange(m)]
            x_adv[idx[ok]] = xb[ok]
            robust[idx[ok]] = False
            r += k
        return x_adv
