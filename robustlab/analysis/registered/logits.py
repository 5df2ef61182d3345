"""The ``logits`` analysis (arXiv:2108.12001): logit statistics with bootstrap intervals, their
histograms, their trend over the training eps, and the confidence disagreement of two runs."""

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
from robustlab.analysis.logits import confidence_disagreement, logit_statistics, summarize
from robustlab.analysis.registered._common import same_samples, training_eps

__all__ = ["Logits"]

_HISTOGRAMS = (
    ("max_logit", "max logit  max_k z_k"),
    ("gap", "logit gap  z_(1) - z_(2)"),
    ("confidence", "confidence  max_k p_k"),
    ("entropy", "entropy  H(p) (nats)"),
)


@register_analysis("logits")
class Logits(Analysis):
    """Per-sample max logit, gaps, confidence, entropy and their true-class versions."""

    title = "Logit statistics"
    sections = (
        (
            "logits",
            "Logit statistics",
            (
                "Per image: max logit max_k z_k; gap z_(1) - z_(2) (top-1 minus top-2 logit); "
                "gap to the mean z_(1) - mean_k z_k [reconstruction]; confidence max_k p_k; "
                "entropy H(p). Seguin et al., Understanding the Logit Distributions of "
                "Adversarially-Trained DNNs (arXiv:2108.12001) report that adversarial training "
                "lowers the max logit and the gap."
            ),
        ),
        (
            "disagreement",
            "Confidence disagreement",
            (
                "Each model's confidence as percentile ranks over the same images; Spearman "
                "correlation of the ranks and the images ranked most differently [reconstruction]. "
                "The same paper (arXiv:2108.12001) reports that adversarially trained and standard "
                "models disagree about which samples are confident."
            ),
        ),
    )
    LOGGED = (
        ("max_logit", "max_logit"),
        ("gap", "gap"),
        ("gap_to_mean", "gap_to_mean"),
        ("confidence", "confidence"),
        ("entropy", "entropy"),
        ("correct", "clean_acc"),
    )
    ROWS = (
        ("max_logit", "mean max logit"),
        ("gap", "mean logit gap z(1) - z(2)"),
        ("gap_to_mean", "mean gap to mean logit"),
        ("confidence", "mean confidence"),
        ("entropy", "mean entropy (nats)"),
        ("true_prob", "mean true-class probability"),
        ("correct", "clean accuracy (sample)"),
    )
    HEADLINE = (("max_logit", "max logit"), ("gap", "gap"))

    def compute(self, inputs: AnalysisInputs) -> AnalysisResult:
        s = logit_statistics(
            inputs.model, inputs.x, inputs.y, batch_size=inputs.option("batch_size", 256)
        )
        return AnalysisResult(summarize(s, n_boot=1000, seed=inputs.seed), s)

    def figures(self, runs: Sequence[Any], plot: Any) -> list[Figure]:
        lr = [r for r in runs if "logits" in r.arrays]
        figs = []
        for stat, label in _HISTOGRAMS if lr else ():
            png = plot.overlay_histograms({r.name: r.arrays["logits"][stat] for r in lr}, label)
            figs.append(Figure("logits", f"Distribution of the {label} on the test sample.", png))
        pts = sorted(((e, r) for r in lr if (e := training_eps(r)) is not None), key=lambda p: p[0])
        if len({e for e, _ in pts}) >= 2:
            series = {
                label: ([e for e, _ in pts], [float(r.arrays["logits"][k].mean()) for _, r in pts])
                for k, label in (("max_logit", "mean max logit"), ("gap", "mean logit gap"))
            }
            caption = (
                "Mean max logit and mean logit gap against the training eps of each run "
                "(0 for objectives without an eps)."
            )
            figs.append(
                Figure("logits", caption, plot.curves(series, "training eps", "logit statistic"))
            )
        for i, a in enumerate(lr):
            for b in lr[i + 1 :]:
                if same_samples(a, b):
                    figs += _disagreement(a, b, plot)
        return figs


def _disagreement(a: Any, b: Any, plot: Any, top_n: int = 8) -> list[Figure]:
    """The rank scatter of two runs' confidences and the samples each ranks most above."""
    d = confidence_disagreement(
        a.arrays["logits"]["confidence"], b.arrays["logits"]["confidence"], top_n=top_n
    )
    figs = [
        Figure(
            "disagreement",
            f"Confidence percentile ranks of {a.name} and {b.name} (Spearman rho "
            f"{d['spearman']:.3f}); marked: the {top_n} samples each model ranks "
            "most above the other.",
            plot.confidence_scatter(
                d["rank_a"], d["rank_b"], a.name, b.name, d["a_over_b"], d["b_over_a"],
                rho=d["spearman"],
            ),
        )
    ]  # fmt: skip
    imgs, labels = a.arrays["samples"]["images"], a.arrays["samples"]["labels"]
    for key, who, other in (("a_over_b", a, b), ("b_over_a", b, a)):
        idx = d[key]
        caps = [f"y={labels[j]} {d['rank_diff'][j]:+.0f}" for j in idx]
        figs.append(
            Figure(
                "disagreement",
                f"Samples {who.name} is most confident about relative to {other.name} "
                f"(caption: label, rank difference {a.name} - {b.name} in percentiles).",
                plot.image_grid(imgs[idx], caps, title=f"{who.name} >> {other.name}"),
            )
        )
    return figs
