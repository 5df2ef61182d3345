"""The fast gradient sign method (Goodfellow et al. 2015) and its Lp generalisation: one
steepest-ascent step of length eps (registered as ``fgsm``).

With ``random_start`` it becomes the "FGSM with random initialisation" of Wong et al. (2020),
step 1.25 eps by default. For L2 the step is along the normalized gradient (the fast gradient
method).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustlab.attacks.base import Attack, register_attack, resolve_threat
from robustlab.attacks.core import LossFn, make_objective, select_targets
from robustlab.attacks.pgd import pgd
from robustlab.attacks.threat import ThreatModel
from robustlab.errors import RobustlabError

__all__ = ["FGSM", "fgsm"]


def fgsm(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    loss: str | LossFn = "ce",
    step_size: float | None = None,
    random_start: bool = False,
    targeted: bool = False,
    y_target: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One projected step of ``step_size`` (default eps, or 1.25 eps from a random start)."""
    if step_size is None:
        eps = threat.eps
        e = float(eps.max()) if isinstance(eps, Tensor) else float(eps)
        step_size = 1.25 * e if random_start else e
    return pgd(
        model,
        x,
        y,
        threat,
        steps=1,
        step_size=step_size,
        loss=loss,
        random_start=random_start,
        targeted=targeted,
        y_target=y_target,
        generator=generator,
    )


@register_attack("fgsm")
class FGSM(Attack):
    """Single-step attack (``fgsm``); ``targeted`` moves towards the class chosen by ``target``."""

    name = "fgsm"

    def __init__(
        self,
        eps: float | str | Tensor | None = None,
        norm: str = "linf",
        threat: ThreatModel | None = None,
        loss: str | LossFn = "ce",
        step_size: float | None = None,
        random_start: bool = False,
        targeted: bool = False,
        target: str | int = "runner-up",
        seed: int | None = 0,
        steps: int = 1,
        restarts: int = 1,
    ) -> None:
        super().__init__(resolve_threat(threat, eps, norm), seed)
        if steps != 1 or restarts != 1:
            raise RobustlabError("FGSM takes exactly one step and no restarts; use pgd instead")
        if step_size is not None and not step_size > 0:
            raise RobustlabError(f"step size must be positive, got {step_size!r}")
        make_objective(loss, targeted)
        self.loss, self.step_size, self.random_start = loss, step_size, random_start
        self.targeted, self.target = targeted, target

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        yt = None
        if self.targeted:
            with torch.no_grad():
                yt = select_targets(model(x), y, self.target, generator)
        return fgsm(
            model,
            x,
            y,
            self.threat,
            loss=self.loss,
            step_size=self.step_size,
            random_start=self.random_start,
            targeted=self.targeted,
            y_target=yt,
            generator=generator,
        )

    def __repr__(self) -> str:
        return f"FGSM({self.threat!r}, loss={self.loss!r}, targeted={self.targeted})"
