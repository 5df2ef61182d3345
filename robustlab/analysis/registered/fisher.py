"""The ``fisher`` analysis (arXiv:1906.02494): the input Fisher information per sample (Frobenius
norm, top eigenvalue, trace) and the cross-class KL metric, with bootstrap intervals and
figures."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from robustlab.analysis.base import (
    Analysis,
    AnalysisInputs,
    AnalysisResult,
    Figure,
    register_analysis,
)
from robustlab.analysis.fisher import cross_class_kl, fisher_summary
from robustlab.analysis.registered._common import stats
from robustlab.analysis.registered.jacobian import distribution_figures

__all__ = ["Fisher"]


@register_analysis("fisher")
class Fisher(Analysis):
    """``F(x)`` summaries (K x K path) and the cross-class KL metric."""

    title = "Input Fisher information"
    definition = (
        "F(x) = sum_k p_k grad_x log p_k grad_x log p_k^T, the quadratic term of KL(p(x) || p(x + "
        "delta)); its Frobenius norm, top eigenvalue and trace per image, computed from the K x K "
        "matrix. Cross-class KL metric: mean KL(p(x_i) || p(x_j)) over pairs with different labels "
        "inside random groups of 10 images [grouping: reconstruction]. Shi et al., Understanding "
        "Adversarial Behavior of DNNs by Disentangling Non-Robust and Robust Components in "
        "Performance Metric (arXiv:1906.02494)."
    )
    LOGGED = (
        ("fisher_fro_mean", "fisher_fro"),
        ("fisher_top_eig_mean", "fisher_top_eig"),
        ("fisher_trace_mean", "fisher_trace"),
        ("kl_metric", "kl_metric"),
        ("kl_metric_over_fisher_fro", "kl_metric_over_fisher_fro"),
    )
    ROWS = (
        ("fisher_fro", "mean |F(x)|_F"),
        ("fisher_top_eig", "mean top eigenvalue of F(x)"),
        ("fisher_trace", "mean trace of F(x)"),
        ("kl_metric", "cross-class KL metric"),
        ("kl_metric_over_fisher_fro", "KL metric / mean |F|_F"),
    )
    HEADLINE = (("fisher_fro_mean", "|F|_F"),)

    def compute(self, inputs: AnalysisInputs) -> AnalysisResult:
        model, x, y, seed = inputs.model, inputs.x, inputs.y, inputs.seed
        f = fisher_summary(model, x, batch_size=min(inputs.option("batch_size", 256), 128))
        group = min(inputs.option("kl_group_size", 10), x.shape[0])
        kl = cross_class_kl(model, x, y, group_size=group, seed=seed)
        sm = {name: stats(v, seed) for name, v in f.items()}
        fro = sm["fisher_fro"]["mean"]
        summary = {
            **{f"{name}_{k}": v for name, d in sm.items() for k, v in d.items()},
            **kl,
            "kl_metric_over_fisher_fro": kl["kl_metric"] / fro if fro > 0 else math.nan,
        }
        return AnalysisResult(summary, f)

    def figures(self, runs: Sequence[Any], plot: Any) -> list[Figure]:
        label = "input Fisher information |F(x)|_F"
        return distribution_figures(runs, plot, "fisher", "fisher_fro", "fisher_fro", label)
