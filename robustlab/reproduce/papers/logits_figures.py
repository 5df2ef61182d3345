"""The figures of arXiv:2108.12001 from the stored evaluations: histograms of max logit and gap
(standard vs AT), max logit and gap against training eps, the students' bar chart, and the
confidence disagreement scatter with the most-disagreeing test images."""

from __future__ import annotations

from typing import Any

import numpy as np

from robustlab.reproduce.engine import Results
from robustlab.reproduce.papers.common import band_curves, grouped_bars
from robustlab.reproduce.plan import PlanContext
from robustlab.reproduce.protocol import eps_label, test_data

__all__ = ["logits_figures"]


def logits_figures(paper: Any, ctx: PlanContext, r: Results) -> list[tuple[str, str, bytes]]:
    from robustlab.report.figures import overlay_histograms
    from robustlab.reproduce.papers.logits import AT_FRACTIONS, TEACHERS

    b, seeds = paper.budget(ctx), ctx.seeds
    s0 = seeds[0]
    out: list[tuple[str, str, bytes]] = []
    for stat, label in (("max_logit", "max logit"), ("gap", "logit gap (top-1 − top-2)")):
        series = {
            "standard": paper._stat(r, f"std-s{s0}", stat),
            f"AT eps {b.eps:g}": paper._stat(r, f"at1-s{s0}", stat),
        }
        out.append(
            (
                f"hist_{stat}.png",
                f"A1: {label} on the test images, standard vs AT (seed {s0})",
                overlay_histograms(series, label),
            )
        )
    xs = [0.0] + [f * b.eps for f in AT_FRACTIONS]
    keys = ["std"] + [f"at{f:g}" for f in AT_FRACTIONS]
    series = {
        label: [[float(paper._stat(r, f"{k}-s{s}", stat).mean()) for s in seeds] for k in keys]
        for stat, label in (("max_logit", "mean max logit"), ("gap", "mean logit gap"))
    }
    out.append(
        (
            "logits_vs_train_eps.png",
            "A1: mean max logit and gap against the training eps "
            f"(line: mean over seeds {seeds}; band: min to max)",
            band_curves(xs, series, "training eps", "mean over test images"),
        )
    )
    groups = [label for _, _, label in TEACHERS]
    bars = {
        "clean": [
            [r.summary(f"student-{n}-s{s}")["clean_accuracy"] for s in seeds]
            for n, _, _ in TEACHERS
        ],
        "robust (worst of PGD-CE, PGD-margin)": [
            [r.summary(f"student-{n}-s{s}")["robust_accuracy"][eps_label(b.eps)] for s in seeds]
            for n, _, _ in TEACHERS
        ],
    }
    out.append(
        (
            "students.png",
            f"A3: students distilled on clean inputs, per teacher: clean and "
            f"robust accuracy at eps {b.eps:g} (bar: mean over seeds; dots: seeds)",
            grouped_bars(groups, bars, "accuracy"),
        )
    )
    out += _a2_figures(paper, ctx, r)
    series_a4 = {
        "standard SmallCNN": paper._stat(r, f"smallcnn-mnist-s{s0}", "max_logit"),
        "TRADES SmallCNN": paper._stat(r, "trades-smallcnn", "max_logit"),
    }
    out.append(
        (
            "a4_hist_max_logit.png",
            f"A4: max logit on MNIST test images, TRADES vs a standard SmallCNN (seed {s0})",
            overlay_histograms(series_a4, "max logit"),
        )
    )
    return out


def _a2_figures(paper: Any, ctx: PlanContext, r: Results) -> list[tuple[str, str, bytes]]:
    """A2: the confidence-rank scatter of the standard and AT models and the images each
    ranks most above the other."""
    from robustlab.analysis.logits import confidence_disagreement
    from robustlab.report.figures import confidence_scatter, image_grid

    s0 = ctx.seeds[0]
    out: list[tuple[str, str, bytes]] = []
    c_std = paper._stat(r, f"std-s{s0}", "confidence")
    c_at = paper._stat(r, f"at1-s{s0}", "confidence")
    dis = confidence_disagreement(c_std, c_at, top_n=8)
    out.append(
        (
            "disagreement_scatter.png",
            f"A2: confidence percentile ranks, standard vs AT "
            f"(seed {s0}); the 8 most-disagreeing images of each side marked",
            confidence_scatter(
                dis["rank_a"],
                dis["rank_b"],
                "standard",
                "AT",
                dis["a_over_b"],
                dis["b_over_a"],
                dis["spearman"],
            ),
        )
    )
    x, y = test_data(paper.protocol(ctx))
    for _side, idx, who in (
        ("a_over_b", dis["a_over_b"], "standard"),
        ("b_over_a", dis["b_over_a"], "AT"),
    ):
        imgs = x[np.asarray(idx, dtype=np.int64)].numpy()
        caps = [f"y={int(y[i])} Δrank {dis['rank_diff'][i]:+.0f}" for i in idx]
        out.append(
            (
                f"disagreement_{who.lower()}_more_confident.png",
                f"A2: test images the {who} model ranks most above the other in confidence",
                image_grid(imgs, caps, cols=8),
            )
        )
    return out
