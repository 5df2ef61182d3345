"""PGD adversarial training (Madry et al. 2018) and fast FGSM training (Wong et al. 2020).

``pgd_at``: ``L = CE_alpha(f(x_adv), y) - lambda H(p(x_adv))`` with ``x_adv`` from ``steps``
projected steepest-ascent steps of the per-sample attack loss (cross-entropy by default) from a
uniform random start in the ball. ``label_smoothing``/``entropy`` on the adversarial loss are
the combinations AT+LS / AT+EntM of arXiv:2011.13538 (reconstruction). With ``trades_beta``
set, their "TRADES variant" is used instead: KL inner maximization and
``CE_alpha(f(x), y) - lambda H(p(x)) + trades_beta * KL(p(x) || p(x_adv))`` (the same as the
``trades`` objective with those options).

``fast_at``: one FGSM step of size ``1.25 eps`` from a uniform random start, projected back
to the ball (Wong, Rice & Kolter 2020, "Fast is better than free").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from robustlab.attacks.core import LOSSES, get_loss, perturb_iterative
from robustlab.attacks.threat import make_threat
from robustlab.objectives.base import (
    Logs,
    Objective,
    StepState,
    accuracy,
    check_choice,
    check_range,
    register_objective,
    uncertainty_loss,
    validate_threat,
)
from robustlab.objectives.standard import check_uncertainty
from robustlab.objectives.trades import kl_adversary, trades_loss

__all__ = ["PGDAT", "FastAT"]


@register_objective("pgd_at")
@dataclass
class PGDAT(Objective):
    """Madry PGD-AT. ``step_size`` defaults to ``2.5 * eps / steps`` (2/255 at 8/255, 10 steps)."""

    step_factor: ClassVar[float] = 2.5

    eps: float | str = 8 / 255
    norm: str = "linf"
    steps: int = 10
    step_size: float | str | None = None
    random_start: bool = True
    attack_loss: str = "ce"
    label_smoothing: float = 0.0
    entropy: float = 0.0
    trades_beta: float | None = None

    def validate(self) -> None:
        validate_threat(self, step_default_factor=self.step_factor)
        check_choice(self.name, "random_start", self.random_start, (True, False))
        check_choice(self.name, "attack_loss", self.attack_loss, tuple(sorted(LOSSES)))
        check_uncertainty(self)
        if self.trades_beta is not None:
            check_range(self.name, "trades_beta", self.trades_beta, lo=0.0)

    def adversary(self, x: Tensor, y: Tensor, state: StepState) -> Tensor:
        """The inner maximization on ``state.raw_model``: detached ``x_adv`` in the ball."""
        threat = make_threat(self.norm, self.eps)
        if self.trades_beta is not None:
            return kl_adversary(
                state.raw_model, x, threat, self.steps, self.step_size, init="normal",
                mode=self.attack_mode, generator=state.generator,
            )  # fmt: skip
        with self.inner(state.raw_model) as m:
            return perturb_iterative(
                m, x, y, threat, self.steps, self.step_size, loss_fn=get_loss(self.attack_loss),
                random_start=self.random_start, generator=state.generator,
            )  # fmt: skip

    def forward(
        self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor | None, state: StepState
    ) -> tuple[Tensor, Logs]:
        x_adv = self.adversary(x, y, state)
        if self.trades_beta is not None:
            return trades_loss(
                model, x, x_adv, y, self.trades_beta, self.label_smoothing, self.entropy
            )
        logits_adv = model(x_adv)
        loss, logs = uncertainty_loss(logits_adv, y, self.label_smoothing, self.entropy)
        logs["adv_acc"] = accuracy(logits_adv, y)
        return loss, logs


@register_objective("fast_at")
@dataclass
class FastAT(PGDAT):
    """FGSM training with a random start; ``step_size`` defaults to ``1.25 * eps``."""

    step_factor: ClassVar[float] = 1.25

    steps: int = 1
