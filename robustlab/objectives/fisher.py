"""The Fisher regularizer of Shi et al., arXiv:1906.02494, from the authors' code.

``L = CE(f(x), y) + c * KL(p(x) || p(x~))`` where ``x~`` maximizes ``KL(p(x) || p(x'))`` by
``steps`` steepest-ascent steps of ``step_size`` (sign steps for Linf) inside the eps-ball from
a uniform random start. Since ``KL(p(x) || p(x + delta)) = 1/2 delta^T F(x) delta + O(|delta|^3)``
this penalizes the input-space Fisher information along its worst direction. Gradients flow
through both terms of the KL, as in the authors' code. Defaults: 10 steps of 2/255 in the
8/255 Linf ball (``step_size`` defaults to ``2.5 * eps / steps``), c = 1 (also used: c = 5).

The inner solver, two ways (``kl_from``): ``start`` (default, the authors' ``LinfFisherSolver``)
maximizes ``KL(p(x_0) || p(x'))`` from the prediction at the random start ``x_0``, with the
model in train mode (``attack_mode: train``: BatchNorm uses batch statistics and updates its
running ones, as in the authors' loop); ``clean`` maximizes ``KL(p(x) || p(x'))`` from the
clean prediction (robustlab's earlier solver; pair it with ``attack_mode: eval``). The outer
KL is always ``KL(p(x) || p(x~))`` with both in the caller's (train) mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.attacks.threat import make_threat
from robustlab.objectives.base import (
    Logs,
    Objective,
    StepState,
    accuracy,
    check_choice,
    check_range,
    kl_per_sample,
    register_objective,
    validate_threat,
)
from robustlab.objectives.trades import kl_adversary

__all__ = ["FisherReg"]


@register_objective("fisher")
@dataclass
class FisherReg(Objective):
    """Cross-entropy plus ``c`` times the worst-case KL in the ball (the Fisher regularizer)."""

    c: float = 1.0
    eps: float | str = 8 / 255
    norm: str = "linf"
    steps: int = 10
    step_size: float | str | None = None
    kl_from: str = "start"
    attack_mode: str = "train"

    def validate(self) -> None:
        check_range(self.name, "c", self.c, lo=0.0)
        check_choice(self.name, "kl_from", self.kl_from, ("start", "clean"))
        validate_threat(self)

    def adversary(self, x: Tensor, y: Tensor, state: StepState) -> Tensor:
        """The KL maximization from a uniform start in the ball, on ``state.raw_model``."""
        return kl_adversary(
            state.raw_model, x, make_threat(self.norm, self.eps), self.steps, self.step_size,
            init="uniform", mode=self.attack_mode, generator=state.generator,
            reference=self.kl_from,
        )  # fmt: skip

    def forward(
        self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor | None, state: StepState
    ) -> tuple[Tensor, Logs]:
        x_t = self.adversary(x, y, state)
        logits = model(x)
        logits_t = model(x_t)
        ce = F.cross_entropy(logits, y)
        kl = kl_per_sample(F.log_softmax(logits, dim=1), logits_t).mean()
        logs: Logs = {"ce": ce.detach(), "kl": kl.detach(), "acc": accuracy(logits, y)}
        return ce + self.c * kl, logs
