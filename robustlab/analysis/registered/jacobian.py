"""The ``jacobian`` analysis (arXiv:2011.13538): Frobenius and spectral norms of the input Jacobian
of the logits per sample, with bootstrap intervals, histograms and per-run means."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from robustlab.analysis.base import (
    Analysis,
    AnalysisInputs,
    AnalysisResult,
    Figure,
    register_analysis,
)
from robustlab.analysis.jacobian import (
    jacobian_frobenius,
    jacobian_frobenius_projected,
    jacobian_spectral_norm,
)
from robustlab.analysis.registered._common import finite, stats

__all__ = ["Jacobian", "distribution_figures"]


def distribution_figures(
    runs: Sequence[Any], plot: Any, name: str, arr: str, prefix: str, label: str
) -> list[Figure]:
    """A histogram of one per-sample array across runs and a bar chart of its means with the
    bootstrap intervals stored under ``<prefix>_ci_low/_ci_high``."""
    rs = [r for r in runs if name in r.arrays]
    if not rs:
        return []
    hist = plot.overlay_histograms({r.name: finite(r.arrays[name][arr]) for r in rs}, label)
    means = {r.name: float(finite(r.arrays[name][arr]).mean()) for r in rs}
    errs = {
        r.name: (r.analysis[name][f"{prefix}_ci_low"], r.analysis[name][f"{prefix}_ci_high"])
        for r in rs
        if f"{prefix}_ci_low" in r.analysis.get(name, {})
    }
    bars = plot.bar_chart(means, f"mean {arr}", errors=errs if len(errs) == len(means) else None)
    return [
        Figure(name, f"Distribution of the {label} on the test sample.", hist),
        Figure(name, f"Mean {label} per run (error bars: 95% bootstrap CI of the mean).", bars),
    ]


@register_analysis("jacobian")
class Jacobian(Analysis):
    """``|dz/dx|_F`` (exact, or ``jacobian_projections`` random projections) and ``|dz/dx|_2``."""

    title = "Input Jacobian of the logits"
    definition = (
        "Frobenius norm |dz/dx|_F = (sum_k |grad_x z_k|^2)^(1/2) per image (K backward "
        "passes). Jin et al., Rethinking Uncertainty in Deep Learning (arXiv:2011.13538) find "
        "that entropy maximization shrinks it."
    )
    LOGGED = (("fro_mean", "jacobian_fro"), ("spec_mean", "jacobian_spec"))
    ROWS = (("fro", "mean |dz/dx|_F"), ("spec", "mean |dz/dx|_2"))
    HEADLINE = (("fro_mean", "|J|_F"),)

    def compute(self, inputs: AnalysisInputs) -> AnalysisResult:
        model, x, seed = inputs.model, inputs.x, inputs.seed
        bs = inputs.option("batch_size", 256)
        n_proj = inputs.option("jacobian_projections", 0)
        if n_proj > 0:
            fro = jacobian_frobenius_projected(model, x, n_proj=n_proj, seed=seed, batch_size=bs)
        else:
            fro = jacobian_frobenius(model, x, batch_size=bs)
        spec = jacobian_spectral_norm(model, x, iters=10, seed=seed, batch_size=bs)
        summary = {
            "method": f"projected({n_proj})" if n_proj else "exact",
            **{f"fro_{k}": v for k, v in stats(fro.numpy(), seed).items()},
            **{f"spec_{k}": v for k, v in stats(spec.numpy(), seed).items()},
        }
        return AnalysisResult(summary, {"jacobian_fro": fro.numpy(), "jacobian_spec": spec.numpy()})

    def figures(self, runs: Sequence[Any], plot: Any) -> list[Figure]:
        label = "logit-Jacobian Frobenius norm |dz/dx|_F"
        return distribution_figures(runs, plot, "jacobian", "jacobian_fro", "fro", label)
