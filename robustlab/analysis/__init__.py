"""Analyses: functions from (model, data) to per-sample arrays and summary numbers, and the
registry of :class:`~robustlab.analysis.base.Analysis` plugins built on them.

``logits`` (arXiv:2108.12001), ``jacobian`` (arXiv:2011.13538), ``fisher`` (arXiv:1906.02494),
``margins`` and ``dynamics`` (arXiv:2302.03015); the papers are listed in the documentation's
"Papers" page. Figures are drawn from these arrays in :mod:`robustlab.report`.
Each is registered in ``analysis/registered/``; importing this package also registers the
``analysis`` and ``snapshot`` training callbacks.
"""

from robustlab.analysis.base import (
    Analysis,
    AnalysisInputs,
    AnalysisResult,
    Figure,
    analysis_names,
    get_analysis,
    register_analysis,
    registered_analyses,
)
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

from robustlab.analysis import callbacks, snapshots  # noqa: E402, F401 - register the callbacks

__all__ += [
    "Analysis",
    "AnalysisInputs",
    "AnalysisResult",
    "Figure",
    "analysis_names",
    "get_analysis",
    "register_analysis",
    "registered_analyses",
]
