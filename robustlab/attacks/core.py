"""The functional core shared by iterative attacks and by adversarial training objectives.

``perturb_iterative`` runs projected steepest ascent of a per-sample loss inside a threat
model. It does not switch model modes: the :class:`~robustlab.attacks.base.Attack` wrapper
does that for evaluation, and training objectives choose their own mode.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.attacks.threat import ThreatModel

LossFn = Callable[[Tensor, Tensor], Tensor]

__all__ = [
    "perturb_iterative",
    "ce_loss",
    "margin_loss",
    "dlr_loss",
    "dlr_targeted_loss",
    "LOSSES",
    "get_loss",
    "misclassified",
    "Objective",
    "make_objective",
    "select_targets",
    "subset_threat",
]

Objective = Callable[[Tensor, Tensor, Tensor | None], Tensor]


def ce_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Per-sample cross-entropy."""
    return F.cross_entropy(logits, y, reduction="none")


def margin_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Per-sample Carlini-Wagner margin ``max_{k != y} z_k - z_y`` (positive = misclassified)."""
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.clone()
    other.scatter_(1, y[:, None], float("-inf"))
    return other.amax(1) - z_y


def dlr_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Per-sample untargeted DLR loss of Croce & Hein (2020), scale invariant in the logits."""
    s, _ = logits.sort(dim=1)
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    top_is_y = (s[:, -1] == z_y).to(logits.dtype)
    best_other = s[:, -2] * top_is_y + s[:, -1] * (1.0 - top_is_y)
    return -(z_y - best_other) / (s[:, -1] - s[:, -3] + 1e-12)


def dlr_targeted_loss(logits: Tensor, y: Tensor, y_target: Tensor) -> Tensor:
    """Per-sample targeted DLR loss of Croce & Hein (2020), to be maximized.

    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` with ``z_pi`` the sorted logits; needs at
    least four classes.
    """
    s, _ = logits.sort(dim=1)
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_t = logits.gather(1, y_target[:, None]).squeeze(1)
    return -(z_y - z_t) / (s[:, -1] - 0.5 * (s[:, -3] + s[:, -4]) + 1e-12)


@torch.no_grad()
def misclassified(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Boolean (N,): the model's prediction on ``x`` differs from ``y``."""
    return model(x).argmax(1) != y


LOSSES: dict[str, LossFn] = {
    "ce": ce_loss,
    "margin": margin_loss,
    "cw": margin_loss,
    "dlr": dlr_loss,
}


def get_loss(name: str | LossFn) -> LossFn:
    """Resolve a loss by name (``ce``, ``margin``/``cw``, ``dlr``) or pass a callable through."""
    if callable(name):
        return name
    from robustlab.errors import RobustlabError

    if name not in LOSSES:
        raise RobustlabError(f"unknown attack loss {name!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[name]


def perturb_iterative(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    steps: int,
    step_size: float | Tensor,
    loss_fn: LossFn = ce_loss,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    targeted: bool = False,
    x_init: Tensor | None = None,
) -> Tensor:
    """Projected steepest ascent of ``loss_fn(model(x_adv), y)`` (descent when ``targeted``).

    ``y`` holds the true labels (untargeted) or the target labels (targeted). Returns the last
    iterate, detached; does not change model modes, parameters or their gradients.
    """
    x = x.detach()
    if x_init is not None:
        x_adv = threat.project(x_init.detach(), x)
    elif random_start:
        x_adv = threat.random_start(x, generator)
    else:
        x_adv = x.clone()
    sign = -1.0 if targeted else 1.0
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = loss_fn(model(x_adv), y).sum() * sign
        (grad,) = torch.autograd.grad(loss, x_adv)
        with torch.no_grad():
            x_adv = threat.project(threat.step(x_adv, grad, step_size), x)
    return x_adv.detach()


def make_objective(loss: str | LossFn, targeted: bool = False) -> Objective:
    """The per-sample quantity an attack maximizes, as ``f(logits, y, y_target)``.

    Untargeted: ``loss(logits, y)``. Targeted: ``-loss(logits, y_target)`` (move towards the
    target), except ``dlr`` which becomes the targeted DLR loss of Croce & Hein (2020).
    """
    if targeted and loss == "dlr":
        return lambda z, y, t: dlr_targeted_loss(z, y, t)  # type: ignore[arg-type]
    fn = get_loss(loss)
    if targeted:
        return lambda z, y, t: -fn(z, t)  # type: ignore[arg-type]
    return lambda z, y, t: fn(z, y)


def select_targets(
    logits: Tensor, y: Tensor, target: str | int, generator: torch.Generator | None = None
) -> Tensor:
    """Target labels for a targeted attack, one per sample, never equal to ``y``.

    ``target``: ``"runner-up"`` (the most likely wrong class), ``"least-likely"``, ``"random"``
    (uniform over the wrong classes, drawn from ``generator``) or a class index.
    """
    from robustlab.errors import RobustlabError

    k = logits.shape[1]
    if isinstance(target, int) and not isinstance(target, bool):
        if not 0 <= target < k:
            raise RobustlabError(f"target class {target} is outside [0, {k})")
        t = torch.full_like(y, target)
        if bool((t == y).any()):
            raise RobustlabError(f"target class {target} equals the true label of some inputs")
        return t
    z = logits.detach().clone()
    if target == "runner-up":
        return z.scatter_(1, y[:, None], float("-inf")).argmax(1)
    if target == "least-likely":
        return z.scatter_(1, y[:, None], float("inf")).argmin(1)
    if target == "random":
        r = torch.randint(0, k - 1, y.shape, generator=generator, device=y.device)
        return r + (r >= y).long()
    raise RobustlabError(
        f"unknown target {target!r}; use runner-up, least-likely, random or a class index"
    )


def subset_threat(threat: ThreatModel, index: Tensor) -> ThreatModel:
    """The same threat model restricted to rows ``index``: :meth:`ThreatModel.subset`."""
    return threat.subset(index)
