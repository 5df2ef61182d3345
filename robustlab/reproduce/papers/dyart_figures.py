"""The `dyart` paper's figures: conflicting-dynamics bars (negative-speed fraction per margin bin,
PGD-AT vs DyART) at both checkpoints, margin histograms, robust accuracy against eps."""

from __future__ import annotations

from typing import Any

import numpy as np

from robustlab.reproduce.engine import Results
from robustlab.reproduce.papers.common import band_curves, fmt_eps, grouped_bars
from robustlab.reproduce.plan import PlanContext
from robustlab.reproduce.protocol import eps_label

__all__ = ["dyart_figures"]

N_BINS = 6  # bins of width eps/4 up to 1.5 eps, then one overflow bin


def _bin_fractions(margin: np.ndarray, speed: np.ndarray, eps: float) -> list[float]:
    from robustlab.analysis.dynamics import conflicting_dynamics

    res = conflicting_dynamics(margin, speed, eps, n_bins=N_BINS)
    return [float(v) for v in res["frac_negative"]]


def _bars(paper: Any, ctx: PlanContext, data: dict, ck: str, label: str) -> tuple:
    eps = paper.budget(ctx).eps
    w = eps / 4
    groups = [f"{fmt_eps(i * w)}-{fmt_eps((i + 1) * w)}" for i in range(N_BINS)]
    groups.append(f">{fmt_eps(N_BINS * w)}")
    series = {}
    for obj, name in (("pgd_at", "PGD-AT"), ("dyart", "DyART")):
        per = [_bin_fractions(data[s][f"{ck}/margin"], data[s][f"{ck}/speed/{obj}"], eps)
               for s in ctx.seeds]  # fmt: skip
        series[name] = [[p[i] for p in per if np.isfinite(p[i])] or [np.nan]
                        for i in range(N_BINS + 1)]  # fmt: skip
    png = grouped_bars(groups, series, "fraction with negative speed",
                       f"{label} checkpoint: boundary approaching, per margin bin")  # fmt: skip
    cap = (f"{label} checkpoint: fraction of points whose boundary moves towards them (negative "
           f"speed) per margin bin (width eps/4, eps {fmt_eps(eps)}), under one PGD-AT and one "
           f"DyART update on the same batches; bars: mean over seeds, dots: seeds.")  # fmt: skip
    return f"dynamics_{ck}.png", cap, png


def _histograms(paper: Any, ctx: PlanContext, data: dict) -> tuple:
    from robustlab.report.figures import _plt, _png

    eps = paper.budget(ctx).eps
    plt = _plt()
    fig, axes = plt.subplots(1, 2, layout="constrained", figsize=(9, 3.4))
    bins = np.linspace(0, 3 * eps, 31)
    for ck, label in (("burnin", "burn-in"), ("atpart", "partly robust")):
        r = np.concatenate([data[s][f"{ck}/margin"] for s in ctx.seeds])
        axes[0].hist(np.clip(r[np.isfinite(r)], 0, 3 * eps), bins, alpha=0.5, label=label)
    for kind, label in (("burnin", "burn-in"), ("at", "PGD-AT"), ("dyart", "DyART")):
        r = np.concatenate([data[s][f"final/{kind}"] for s in ctx.seeds])
        axes[1].hist(np.clip(r[np.isfinite(r)], 0, 3 * eps), bins, alpha=0.5, label=label)
    for ax, title in zip(axes, ("dynamics points (training batches)", "final models (test)"),
                         strict=True):  # fmt: skip
        ax.axvline(eps, color="k", ls="--", lw=1)
        ax.set_xlabel("Linf margin (clipped at 3 eps; 0 = misclassified)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    cap = (f"Verified Linf margins (FAB solver), all seeds pooled; dashed line: eps "
           f"{fmt_eps(eps)}. Left: the points of the dynamics at both checkpoints; right: test "
           f"images under the final models.")  # fmt: skip
    return "margin_histograms.png", cap, _png(fig)


def dyart_figures(
    paper: Any, ctx: PlanContext, r: Results, data: dict[int, dict[str, Any]]
) -> list[tuple[str, str, bytes]]:
    from robustlab.reproduce.papers.dyart import CHECKPOINTS, key

    out = [_bars(paper, ctx, data, ck, label) for ck, label in CHECKPOINTS]
    out.append(_histograms(paper, ctx, data))
    eps_values = paper.eps_values(ctx)
    series = {
        label: [[r.summary(key(kind, s))["robust_accuracy"][eps_label(e)] for s in ctx.seeds]
                for e in eps_values]
        for kind, label in (("burnin", "burn-in"), ("at", "PGD-AT"), ("dyart", "DyART"))
    }  # fmt: skip
    png = band_curves(list(eps_values), series, "test eps (Linf)",
                      "robust accuracy (worst case)", "robust accuracy against eps")  # fmt: skip
    cap = ("Robust accuracy (per-sample worst of PGD-CE and PGD-margin) against the test eps, "
           "0.5x to 2x the training eps; mean over seeds, band min-max.")  # fmt: skip
    out.append(("robust_vs_eps.png", cap, png))
    return out
