"""Projected gradient descent (Madry et al. 2018): random start, restarts, step-size schedules,
CE / margin (CW) / DLR losses, untargeted and targeted.

``pgd`` is the functional form; :class:`PGD` is the registered attack (``pgd``). With
``early_stop`` each point leaves the batch at its first misclassified iterate (the returned
point for it), which saves work and can only lower robust accuracy; without it the last iterate
is returned, as in the reference implementations.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from robustlab.attacks.base import Attack, register_attack, resolve_threat
from robustlab.attacks.core import (
    LossFn,
    Objective,
    make_objective,
    select_targets,
)
from robustlab.attacks.threat import ThreatModel
from robustlab.errors import RobustlabError

__all__ = ["PGD", "pgd", "step_schedule", "SCHEDULES", "default_step_size"]

SCHEDULES = ("constant", "cosine", "linear", "step")


def step_schedule(step_size: float, steps: int, schedule: str = "constant") -> list[float]:
    """Step size for each of ``steps`` iterations.

    ``constant``; ``cosine`` (half cosine from ``step_size`` towards 0); ``linear`` (to 0);
    ``step`` (halved after 50% and again after 75% of the steps).
    """
    if schedule not in SCHEDULES:
        raise RobustlabError(f"unknown step-size schedule {schedule!r}; choose one of {SCHEDULES}")
    out = []
    for t in range(steps):
        if schedule == "constant":
            f = 1.0
        elif schedule == "cosine":
            f = 0.5 * (1.0 + math.cos(math.pi * t / steps))
        elif schedule == "linear":
            f = 1.0 - t / steps
        else:
            f = 1.0 if t < steps // 2 else (0.5 if t < (3 * steps) // 4 else 0.25)
        out.append(step_size * f)
    return out


def default_step_size(threat: ThreatModel | float, steps: int, factor: float = 2.5) -> float:
    """The one default PGD step size: Madry et al.'s ``2.5 * eps / steps`` (enough to cross the
    ball); ``factor`` replaces 2.5 where a method says otherwise. ``threat`` may be an eps
    (a per-sample eps uses its largest radius). Attacks, training objectives and validation
    all take it from here."""
    eps = threat.eps if isinstance(threat, ThreatModel) else threat
    e = float(eps.max()) if isinstance(eps, Tensor) else float(eps)
    return factor * e / max(steps, 1)


def _check_params(steps: int, restarts: int, step_size: float | None) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise RobustlabError(f"steps must be a positive integer, got {steps!r}")
    if not isinstance(restarts, int) or restarts < 1:
        raise RobustlabError(f"restarts must be a positive integer, got {restarts!r}")
    if step_size is not None and not (math.isfinite(step_size) and step_size > 0):
        raise RobustlabError(f"step size must be positive, got {step_size!r}")


def _run(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    yt: Tensor | None,
    threat: ThreatModel,
    sizes: list[float],
    objective: Objective,
    x_start: Tensor,
    early_stop: bool,
    need_final: bool,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """One PGD run. Returns (x_adv, broken (N,) bool, final objective (N,) or None)."""
    n = x.shape[0]
    out = x_start.clone()
    broken = torch.zeros(n, dtype=torch.bool, device=x.device)
    idx = torch.arange(n, device=x.device)
    xa, ya, ta, tha, x0 = x_start, y, yt, threat, x
    for size in sizes:
        xa = xa.detach().requires_grad_(True)
        logits = model(xa)
        # mean, not sum: the direction is the same, and this reproduces the reference
        # implementations bit for bit (a sum rounds differently where gradients cancel)
        (grad,) = torch.autograd.grad(objective(logits, ya, ta).mean(), xa)
        xa = xa.detach()
        if early_stop:
            wrong = logits.detach().argmax(1) != ya
            if bool(wrong.any()):
                out[idx[wrong]] = xa[wrong]
                broken[idx[wrong]] = True
                keep = ~wrong
                if not bool(keep.any()):
                    return out, broken, None
                idx, ya, x0, xa, grad = idx[keep], ya[keep], x0[keep], xa[keep], grad[keep]
                ta = ta[keep] if ta is not None else None
                tha = threat.subset(idx)
        with torch.no_grad():
            xa = tha.project(tha.step(xa, grad, size), x0)
    out[idx] = xa.detach()
    final = None
    if early_stop or need_final:
        with torch.no_grad():
            logits = model(xa)
            wrong = logits.argmax(1) != ya
            broken[idx] = wrong
            if need_final:
                final = torch.full((n,), float("-inf"), device=x.device, dtype=logits.dtype)
                final[idx] = objective(logits, ya, ta)
    return out, broken, final


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    steps: int = 10,
    step_size: float | None = None,
    loss: str | LossFn = "ce",
    random_start: bool = True,
    restarts: int = 1,
    targeted: bool = False,
    y_target: Tensor | None = None,
    schedule: str = "constant",
    early_stop: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """PGD on a batch; ``y`` are the true labels, ``y_target`` the targets when ``targeted``.

    Each restart after the first runs only on the points not yet misclassified, from a random
    start even when ``random_start`` is off; a point keeps the first adversarial example found
    for it, else the highest-objective final iterate.
    Does not switch model modes (see :class:`PGD` for the checked, mode-safe attack).
    """
    _check_params(steps, restarts, step_size)
    if targeted and y_target is None:
        raise RobustlabError("a targeted PGD needs target labels (y_target)")
    x = x.detach()
    sizes = step_schedule(step_size or default_step_size(threat, steps), steps, schedule)
    objective = make_objective(loss, targeted)
    best = x.clone()
    best_obj = torch.full((x.shape[0],), float("-inf"), device=x.device)
    broken = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for r in range(restarts):
        todo = (~broken).nonzero().squeeze(1)
        if todo.numel() == 0:
            break
        xs, ys = x[todo], y[todo]
        ts = y_target[todo] if y_target is not None else None
        th = threat.subset(todo)
        # restarts after the first always start at random (a repeat of a run would be wasted)
        start = th.random_start(xs, generator) if (random_start or r > 0) else xs.clone()
        adv, hit, final = _run(
            model, xs, ys, ts, th, sizes, objective, start, early_stop, restarts > 1
        )
        if restarts == 1:
            best[todo] = adv
            break
        if final is None:
            final = torch.full((todo.numel(),), float("-inf"), device=x.device)
        final = final.to(best_obj.dtype)
        better = hit | (final > best_obj[todo])
        best[todo[better]] = adv[better]
        best_obj[todo] = torch.maximum(best_obj[todo], final)
        broken[todo[hit]] = True
    return best


@register_attack("pgd")
class PGD(Attack):
    """Projected gradient descent under an Lp threat model (``pgd``).

    ``step_size`` defaults to ``2.5 * eps / steps``; ``schedule`` is one of
    ``constant|cosine|linear|step``; ``loss`` one of ``ce|margin|cw|dlr``. Targeted mode attacks
    the class chosen by ``target`` (``runner-up``, ``least-likely``, ``random`` or an index).
    """

    name = "pgd"

    def __init__(
        self,
        eps: float | str | Tensor | None = None,
        norm: str = "linf",
        threat: ThreatModel | None = None,
        steps: int = 10,
        step_size: float | None = None,
        loss: str | LossFn = "ce",
        random_start: bool = True,
        restarts: int = 1,
        targeted: bool = False,
        target: str | int = "runner-up",
        schedule: str = "constant",
        early_stop: bool = False,
        seed: int | None = 0,
    ) -> None:
        super().__init__(resolve_threat(threat, eps, norm), seed)
        _check_params(steps, restarts, step_size)
        step_schedule(1.0, 1, schedule)
        make_objective(loss, targeted)
        self.steps, self.step_size, self.loss = steps, step_size, loss
        self.random_start, self.restarts, self.targeted = random_start, restarts, targeted
        self.target, self.schedule, self.early_stop = target, schedule, early_stop

    def targets(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        """Target labels chosen from the clean logits."""
        with torch.no_grad():
            logits = model(x)
        return select_targets(logits, y, self.target, generator)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        yt = self.targets(model, x, y, generator) if self.targeted else None
        return pgd(
            model,
            x,
            y,
            self.threat,
            steps=self.steps,
            step_size=self.step_size,
            loss=self.loss,
            random_start=self.random_start,
            restarts=self.restarts,
            targeted=self.targeted,
            y_target=yt,
            schedule=self.schedule,
            early_stop=self.early_stop,
            generator=generator,
        )

    def __repr__(self) -> str:
        return (
            f"PGD({self.threat!r}, steps={self.steps}, step_size={self.step_size}, "
            f"loss={self.loss!r}, restarts={self.restarts}, targeted={self.targeted})"
        )
