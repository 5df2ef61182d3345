"""TRADES (Zhang et al., ICML 2019): a natural loss plus ``beta`` times a KL robustness term.

``L = CE_alpha(f(x), y) - lambda H(p(x)) + beta * KL(p(x) || p(x_adv))`` where ``x_adv``
maximizes ``KL(p(x) || p(x'))`` over the threat model by projected steepest ascent started at
``x + init_std * N(0, 1)`` (the authors' code: 0.001). Gradients flow through both ``p(x)``
and ``p(x_adv)`` in the outer loss, as in the authors' code. Label smoothing / entropy on the
natural term follow arXiv:2011.13538 (reconstruction); L2 uses the threat model's normalized
steps (reconstruction: the authors' L2 variant optimizes differently).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.attacks.core import perturb_iterative
from robustlab.attacks.threat import ThreatModel, make_threat
from robustlab.objectives.base import (
    Logs,
    Objective,
    StepState,
    accuracy,
    check_range,
    inner_max,
    kl_per_sample,
    register_objective,
    uncertainty_loss,
    validate_threat,
)
from robustlab.objectives.standard import check_uncertainty

__all__ = ["TRADES", "kl_adversary", "trades_loss"]


def kl_adversary(
    raw_model: nn.Module,
    x: Tensor,
    threat: ThreatModel,
    steps: int,
    step_size: float,
    *,
    init: str = "normal",
    init_std: float = 0.001,
    mode: str = "eval",
    generator: torch.Generator | None = None,
    reference: str = "clean",
) -> Tensor:
    """Maximize ``KL(p(x_ref) || p(x'))`` over ``x'`` in the threat model (TRADES / Fisher
    inner max).

    ``init="normal"`` starts at ``x + init_std * N(0, 1)`` (TRADES); ``"uniform"`` at a uniform
    point of the ball (Fisher regularizer). ``reference="clean"``: ``x_ref = x``; ``"start"``:
    ``x_ref`` is the starting point (the Fisher authors' solver). Returns a detached ``x_adv``.
    """
    with inner_max(raw_model, mode) as m:
        if init == "normal":
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x_init: Tensor = x + init_std * noise
        else:
            x_init = threat.random_start(x, generator)
        with torch.no_grad():
            logp_clean = F.log_softmax(m(x_init if reference == "start" else x), dim=1)

        def kl_to_clean(logits: Tensor, _y: Tensor) -> Tensor:
            return kl_per_sample(logp_clean, logits)

        dummy = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return perturb_iterative(
            m,
            x,
            dummy,
            threat,
            steps,
            step_size,
            loss_fn=kl_to_clean,
            random_start=False,
            generator=generator,
            x_init=x_init,
        )


def trades_loss(
    model: nn.Module,
    x: Tensor,
    x_adv: Tensor,
    y: Tensor,
    beta: float,
    label_smoothing: float = 0.0,
    entropy_weight: float = 0.0,
) -> tuple[Tensor, Logs]:
    """The TRADES outer loss (two forward passes, in the model's current mode)."""
    logits = model(x)
    logits_adv = model(x_adv)
    nat, logs = uncertainty_loss(logits, y, label_smoothing, entropy_weight)
    kl = kl_per_sample(F.log_softmax(logits, dim=1), logits_adv).mean()
    logs.update(kl=kl.detach(), acc=accuracy(logits, y), adv_acc=accuracy(logits_adv, y))
    return nat + beta * kl, logs


@register_objective("trades")
@dataclass
class TRADES(Objective):
    """TRADES. Defaults: CIFAR-10 Linf eps 8/255, 10 steps of 2/255, beta 6."""

    beta: float = 6.0
    eps: float | str = 8 / 255
    norm: str = "linf"
    steps: int = 10
    step_size: float | str | None = None
    init_std: float = 0.001
    label_smoothing: float = 0.0
    entropy: float = 0.0

    def validate(self) -> None:
        check_range(self.name, "beta", self.beta, lo=0.0)
        validate_threat(self)
        check_range(self.name, "init_std", self.init_std, lo=0.0)
        check_uncertainty(self)

    def adversary(self, x: Tensor, y: Tensor, state: StepState) -> Tensor:
        """The KL inner maximization on ``state.raw_model``: detached ``x_adv`` in the ball."""
        return kl_adversary(
            state.raw_model, x, make_threat(self.norm, self.eps), self.steps, self.step_size,
            init="normal", init_std=self.init_std, mode=self.attack_mode,
            generator=state.generator,
        )  # fmt: skip

    def forward(
        self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor | None, state: StepState
    ) -> tuple[Tensor, Logs]:
        x_adv = self.adversary(x, y, state)
        return trades_loss(model, x, x_adv, y, self.beta, self.label_smoothing, self.entropy)
