"""Analyses: functions from (model, data) to per-sample arrays and summary numbers.

``logits`` (paper A), ``jacobian`` (paper B), ``fisher`` (paper C), ``margins`` and
``dynamics`` (paper D). Figures are drawn from these arrays in :mod:`robustlab.report`.
"""

from robustlab.analysis.dynamics import (
    boundary_speed,
    conflicting_dynamics,
    finite_difference_speed,
    hard_margin,
    objective_velocity,
    parameter_velocity,
)
from robustlab.analysis.fisher import cross_class_kl, explicit_fisher, fisher_summary
from robustlab.analysis.jacobian import (
    jacobian_frobenius,
    jacobian_frobenius_projected,
    jacobian_spectral_norm,
)
from robustlab.analysis.logits import (
    confidence_disagreement,
    logit_statistics,
    spearman,
    summarize,
)

__all__ = [
    "boundary_speed",
    "conflicting_dynamics",
    "finite_difference_speed",
    "hard_margin",
    "objective_velocity",
    "parameter_velocity",
    "cross_class_kl",
    "explicit_fisher",
    "fisher_summary",
    "jacobian_frobenius",
    "jacobian_frobenius_projected",
    "jacobian_spectral_norm",
    "confidence_disagreement",
    "logit_statistics",
    "spearman",
    "summarize",
]
