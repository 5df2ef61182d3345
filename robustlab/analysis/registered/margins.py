"""The ``margins`` analysis (arXiv:2302.03015): verified minimal perturbation margins from the
boundary solver, their summary and histogram. Keeps the boundary points for ``dynamics``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from robustlab.analysis.base import (
    Analysis,
    AnalysisInputs,
    AnalysisResult,
    Figure,
    register_analysis,
)
from robustlab.analysis.registered._common import stats

__all__ = ["Margins"]


@register_analysis("margins")
class Margins(Analysis):
    """Minimal-norm margins (``analysis.margins.minimum_margins``), verified."""

    title = "Minimal-perturbation margins"
    definition = (
        "R(x) = min |x' - x|_p with x' in [0,1] on the decision boundary "
        "(z_y = max_{k!=y} z_k), found by the FAB boundary solver and verified; 0 for "
        "misclassified images. A point is robust at eps iff R(x) > eps. Xu et al., Exploring "
        "and Exploiting Decision Boundary Dynamics for Adversarial Robustness "
        "(arXiv:2302.03015)."
    )
    LOGGED = (("margin_mean", "margin"), ("frac_margin_below_eps", "frac_margin_below_eps"))
    ROWS = (
        ("margin", "mean margin (correct, verified)"),
        ("median_margin", "median margin"),
        ("frac_margin_below_eps", "fraction with margin < eps (or wrong)"),
        ("frac_verified", "fraction of margins verified"),
    )
    HEADLINE = (("margin_mean", "margin"),)

    def compute(self, inputs: AnalysisInputs) -> AnalysisResult:
        from robustlab.analysis.margins import minimum_margins

        eps, seed = inputs.eps, inputs.seed
        m = minimum_margins(
            inputs.model, inputs.x, inputs.y, norm=inputs.norm,
            steps=inputs.option("margin_steps", 100), seed=seed, eps_hint=eps,
        )  # fmt: skip
        inputs.cache["margins"] = m  # the boundary points, for dynamics
        r = m["margin"].double().numpy()
        correct, verified = m["correct"].numpy(), m["verified"].numpy()
        ok = verified & correct
        rr = np.where(ok, r, np.nan)
        summary = {
            "norm": inputs.threat.name,
            "eps": eps,
            **{f"margin_{k}": v for k, v in stats(rr, seed).items()},
            "median_margin": float(np.nanmedian(rr)) if ok.any() else math.nan,
            "frac_verified": float(m["verified"].double().mean()),
            "frac_correct": float(m["correct"].double().mean()),
            # A verified margin below eps certifies an adversarial example inside the ball.
            "frac_margin_below_eps": float(np.mean(np.where(correct, r < eps, True))),
        }
        arrays = {"margin": r, "verified": verified, "correct": correct}
        return AnalysisResult(summary, arrays)

    def figures(self, runs: Sequence[Any], plot: Any) -> list[Figure]:
        by_norm: dict[tuple[str, float], list[Any]] = {}
        for r in (r for r in runs if "margins" in r.arrays):
            m = r.analysis.get("margins", {})
            key = (str(m.get("norm", "")), float(m.get("eps", math.nan)))
            by_norm.setdefault(key, []).append(r)
        figs = []
        for (norm, eps), mr in by_norm.items():  # runs analysed at another norm: own figure
            series = {}
            for r in mr:
                m = r.arrays["margins"]
                ok = m["verified"].astype(bool) & m["correct"].astype(bool)
                series[r.name] = m["margin"][ok]
            caption = (
                f"Minimal {norm} perturbation margins of correctly classified, verified points "
                f"(dotted: eps = {eps:.4g})."
            )
            png = plot.overlay_histograms(
                series, f"{norm} margin", vline=eps if eps == eps else None
            )
            figs.append(Figure("margins", caption, png))
        return figs
