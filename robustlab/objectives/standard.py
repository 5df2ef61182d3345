"""Standard training: cross-entropy with optional label smoothing and entropy maximization.

``L = CE_alpha(f(x), y) - lambda * H(softmax f(x))`` where ``CE_alpha`` is the cross-entropy
against ``(1 - alpha) e_y + alpha / K``. With ``alpha = lambda = 0`` this is plain
cross-entropy; the LS and EntM forms are a reconstruction
(the exact form and weights) of the regularizers studied by Jin et al., arXiv:2011.13538.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from robustlab.objectives.base import (
    Logs,
    Objective,
    StepState,
    accuracy,
    check_range,
    register_objective,
    uncertainty_loss,
)

__all__ = ["Standard", "EntM", "LabelSmoothing", "check_uncertainty"]


def check_uncertainty(obj: Objective) -> None:
    """Validate ``label_smoothing`` in [0, 1) and ``entropy`` >= 0 on ``obj``."""
    check_range(obj.name, "label_smoothing", obj.label_smoothing, 0.0, 1.0, hi_open=True)
    check_range(obj.name, "entropy", obj.entropy, lo=0.0)


@register_objective("standard")
@dataclass
class Standard(Objective):
    """Natural training. ``label_smoothing``: alpha in [0, 1); ``entropy``: lambda >= 0."""

    label_smoothing: float = 0.0
    entropy: float = 0.0

    def validate(self) -> None:
        check_uncertainty(self)

    def forward(
        self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor | None, state: StepState
    ) -> tuple[Tensor, Logs]:
        logits = model(x)
        loss, logs = uncertainty_loss(logits, y, self.label_smoothing, self.entropy)
        logs["acc"] = accuracy(logits, y)
        return loss, logs


@register_objective("entm")
@dataclass
class EntM(Standard):
    """Entropy maximization alone (arXiv:2011.13538): ``standard`` with ``entropy`` 1."""

    entropy: float = 1.0


@register_objective("ls")
@dataclass
class LabelSmoothing(Standard):
    """Label smoothing alone (arXiv:2011.13538): ``standard`` with ``label_smoothing`` 0.1."""

    label_smoothing: float = 0.1
