"""MART (Wang et al., ICLR 2020): misclassification-aware adversarial training.

``L = BCE(p(x_adv), y) + beta * KL(p(x) || p(x_adv)) * (1 - p_y(x))`` (batch mean), with the
boosted cross-entropy ``BCE = -log p_y(x_adv) - log(1 - max_{k != y} p_k(x_adv))`` and
``x_adv`` from cross-entropy PGD started at ``x + init_std * N(0, 1)`` (0.001 in the authors'
code). ``log(1 - p_k)`` is computed exactly as ``logsumexp_{j != k} z_j - logsumexp_j z_j``
instead of the authors' ``log(1.0001 - p_k)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.attacks.core import ce_loss, perturb_iterative
from robustlab.attacks.threat import make_threat
from robustlab.objectives.base import (
    Logs,
    Objective,
    StepState,
    accuracy,
    check_range,
    kl_per_sample,
    register_objective,
    validate_threat,
)

__all__ = ["MART", "boosted_ce"]


def boosted_ce(logits: Tensor, y: Tensor) -> Tensor:
    """Per-sample ``-log p_y - log(1 - max_{k != y} p_k)`` (MART's boosted cross-entropy)."""
    logp = F.log_softmax(logits, dim=1)
    nll = -logp.gather(1, y[:, None]).squeeze(1)
    masked = logits.scatter(1, y[:, None], float("-inf"))
    k = masked.argmax(dim=1, keepdim=True)  # the most likely wrong class
    without_k = logits.scatter(1, k, float("-inf"))
    log_one_minus_pk = torch.logsumexp(without_k, dim=1) - torch.logsumexp(logits, dim=1)
    return nll - log_one_minus_pk


@register_objective("mart")
@dataclass
class MART(Objective):
    """MART. Defaults: Linf eps 8/255, 10 steps of 2/255, beta 6 (the authors' CIFAR-10)."""

    beta: float = 6.0
    eps: float | str = 8 / 255
    norm: str = "linf"
    steps: int = 10
    step_size: float | str | None = None
    init_std: float = 0.001

    def validate(self) -> None:
        check_range(self.name, "beta", self.beta, lo=0.0)
        validate_threat(self)
        check_range(self.name, "init_std", self.init_std, lo=0.0)

    def adversary(self, x: Tensor, y: Tensor, state: StepState) -> Tensor:
        """Cross-entropy PGD from ``x + init_std * N(0, 1)`` on ``state.raw_model``."""
        threat = make_threat(self.norm, self.eps)
        noise = torch.randn(x.shape, generator=state.generator, device=x.device, dtype=x.dtype)
        with self.inner(state.raw_model) as m:
            return perturb_iterative(
                m, x, y, threat, self.steps, self.step_size, loss_fn=ce_loss, random_start=False,
                generator=state.generator, x_init=x + self.init_std * noise,
            )  # fmt: skip

    def forward(
        self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor | None, state: StepState
    ) -> tuple[Tensor, Logs]:
        x_adv = self.adversary(x, y, state)
        logits = model(x)
        logits_adv = model(x_adv)
        bce = boosted_ce(logits_adv, y).mean()
        logp = F.log_softmax(logits, dim=1)
        p_true = logp.gather(1, y[:, None]).squeeze(1).exp()
        kl = kl_per_sample(logp, logits_adv)
        reg = (kl * (1.0 - p_true)).mean()
        logs: Logs = {
            "bce": bce.detach(),
            "kl": kl.detach().mean(),
            "acc": accuracy(logits, y),
            "adv_acc": accuracy(logits_adv, y),
        }
        return bce + self.beta * reg, logs
