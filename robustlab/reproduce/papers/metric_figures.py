"""The `metric` paper's figures: the per-epoch records of the ``analysis`` callback (KL metric,
input
Fisher norm, clean accuracy) for standard training, PGD-AT and the Fisher regularizer, seed
mean with a min-max band."""

from __future__ import annotations

from typing import Any

import numpy as np

from robustlab.reproduce.papers.common import band_curves
from robustlab.reproduce.plan import PlanContext

__all__ = ["metric_figures"]

_PANELS = (
    ("analysis/kl_metric", "cross-class KL metric", "metric_over_epochs.png"),
    ("analysis/fisher_fro", "input Fisher norm (Frobenius)", "fisher_over_epochs.png"),
    ("analysis/clean_acc", "clean accuracy (callback images)", "accuracy_over_epochs.png"),
)


def metric_figures(
    paper: Any, ctx: PlanContext, data: dict[int, dict[str, Any]]
) -> list[tuple[str, str, bytes]]:
    from robustlab.reproduce.papers.metric import MODELS

    seeds = ctx.seeds
    n_ep = min(len(data[s]["logs"][k]) for s in seeds for k, _, _ in MODELS)
    xs = list(range(1, n_ep + 1))
    out = []
    for key, label, fname in _PANELS:
        logs = {k: [data[s]["logs"][k] for s in seeds] for k, _, _ in MODELS}
        series = {
            name: [[float(log[e].get(key, np.nan)) for log in logs[k]] for e in range(n_ep)]
            for k, _, name in MODELS
        }
        png = band_curves(xs, series, "epoch", label, f"{label} over training")
        cap = (f"{label} after each epoch, on {paper.settings(ctx).n_callback} fixed test images "
               f"(analysis callback); mean over seeds {seeds}, band min-max.")  # fmt: skip
        out.append((fname, cap, png))
    return out
