"""Figures from analysis arrays: each function takes plain arrays and returns PNG bytes.

matplotlib (the ``report`` extra) is imported lazily with the Agg backend, so the core library
does not need it. Nothing here computes an analysis; it only draws what ``robustlab.analysis``
produced.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from robustlab.errors import RobustlabError

__all__ = [
    "overlay_histograms",
    "confidence_scatter",
    "image_grid",
    "conflicting_dynamics_figure",
    "bar_chart",
    "curves",
    "curves_grid",
]

_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2"]


def _plt() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise RobustlabError("figures need matplotlib: pip install 'robustlab[report]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    fig.clf()
    _plt().close(fig)
    return buf.getvalue()


def overlay_histograms(
    series: Mapping[str, np.ndarray],
    xlabel: str,
    title: str = "",
    bins: int = 40,
    vline: float | None = None,
) -> bytes:
    """Overlaid density histograms of one statistic for several models, with their means."""
    plt = _plt()
    fig, ax = plt.subplots(layout="constrained", figsize=(5.2, 3.4))
    finite = [np.asarray(v, dtype=float)[np.isfinite(v)] for v in series.values()]
    allv = np.concatenate(finite) if finite else np.zeros(0)
    edges = np.histogram_bin_edges(allv, bins=bins) if allv.size else bins
    for i, (name, v) in enumerate(zip(series, finite, strict=True)):
        c = _COLORS[i % len(_COLORS)]
        if v.size == 0:
            continue
        ax.hist(
            v, bins=edges, density=True, alpha=0.45, color=c, label=f"{name} (mean {v.mean():.3g})"
        )
        ax.axvline(v.mean(), color=c, lw=1.5, ls="--")
    if vline is not None:
        ax.axvline(vline, color="k", lw=1, ls=":")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return _png(fig)


def confidence_scatter(
    conf_a: np.ndarray,
    conf_b: np.ndarray,
    name_a: str,
    name_b: str,
    highlight_a: Sequence[int] = (),
    highlight_b: Sequence[int] = (),
    rho: float | None = None,
) -> bytes:
    """Scatter of two models' percentile confidence ranks, the most-disagreeing samples marked."""
    plt = _plt()
    fig, ax = plt.subplots(layout="constrained", figsize=(4.4, 4.2))
    ax.scatter(conf_a, conf_b, s=6, alpha=0.4, color="#555555", lw=0)
    for idx, name, color in ((highlight_a, name_a, _COLORS[0]), (highlight_b, name_b, _COLORS[1])):
        if len(idx):
            sel = list(idx)
            ax.scatter(conf_a[sel], conf_b[sel], s=24, color=color, label=f"{name} more confident")
    ax.plot([0, 100], [0, 100], color="k", lw=0.8, ls=":")
    ax.set_xlabel(f"confidence rank, {name_a} (percentile)")
    ax.set_ylabel(f"confidence rank, {name_b} (percentile)")
    if rho is not None:
        ax.set_title(f"Spearman rho = {rho:.3f}")
    if len(highlight_a) or len(highlight_b):
        ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def image_grid(
    images: np.ndarray, captions: Sequence[str] = (), cols: int = 8, title: str = ""
) -> bytes:
    """A grid of images (N, C, H, W) in [0, 1] or uint8, with an optional caption under each."""
    plt = _plt()
    imgs = np.asarray(images)
    if imgs.ndim != 4:
        raise RobustlabError(f"image_grid needs (N, C, H, W) images, got shape {imgs.shape}")
    if imgs.dtype == np.uint8:
        imgs = imgs.astype(np.float64) / 255.0
    n = imgs.shape[0]
    cols = max(1, min(cols, n))
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(
        rows, cols, layout="constrained", figsize=(1.25 * cols, 1.45 * rows + 0.3), squeeze=False
    )
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i >= n:
            continue
        im = imgs[i].transpose(1, 2, 0).clip(0, 1)
        if im.shape[2] == 1:
            ax.imshow(im[:, :, 0], cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(im)
        if i < len(captions):
            ax.set_title(captions[i], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return _png(fig)


def conflicting_dynamics_figure(results: Mapping[str, Mapping[str, Any]], eps: float) -> bytes:
    """Fractions of positive and negative boundary speeds per margin bin, one panel per run."""
    plt = _plt()
    n = max(1, len(results))
    cols = min(2, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(
        rows, cols, layout="constrained", figsize=(5.0 * cols, 3.4 * rows), squeeze=False,
        sharey=True,
    )  # fmt: skip
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    for ax, (name, r) in zip(axes.ravel(), results.items(), strict=False):
        edges = np.asarray(r["bin_edges"], dtype=float)
        width = edges[1] - edges[0]
        lower = edges[:-1]  # the last bin is open: [edges[-2], inf)
        pos = np.nan_to_num(np.asarray(r["frac_positive"], dtype=float))
        neg = np.nan_to_num(np.asarray(r["frac_negative"], dtype=float))
        kw = {"width": width * 0.9, "align": "edge"}
        ax.bar(lower, pos, color=_COLORS[2], label="speed > 0 (moves away)", **kw)
        ax.bar(lower, -neg, color=_COLORS[1], label="speed < 0 (approaches)", **kw)
        ax.axhline(0, color="k", lw=0.7)
        ax.axvline(eps, color="k", lw=0.8, ls=":")
        labels = [f"{e:.3g}" for e in edges[:-1]]
        labels[-1] = f">={edges[-2]:.3g}"
        ax.set_xticks(lower)
        ax.set_xticklabels(labels, rotation=60, fontsize=7)
        ax.set_xlabel("margin bin (lower edge)")
        ax.set_title(f"{name} (n={r.get('n', '?')})", fontsize=9)
        ax.set_ylabel("fraction of points in bin")
    axes[0][0].legend(fontsize=7)
    return _png(fig)


def bar_chart(
    values: Mapping[str, float],
    ylabel: str,
    errors: Mapping[str, Any] | None = None,
    title: str = "",
) -> bytes:
    """One bar per run (for example mean Jacobian or Fisher norm), with optional CI error bars."""
    plt = _plt()
    fig, ax = plt.subplots(layout="constrained", figsize=(max(3.0, 1.1 * len(values) + 1.5), 3.2))
    names = list(values)
    v = np.array([values[k] for k in names], dtype=float)
    yerr = None
    if errors:
        lo = np.array([v[i] - errors[k][0] for i, k in enumerate(names)])
        hi = np.array([errors[k][1] - v[i] for i, k in enumerate(names)])
        yerr = np.vstack([lo, hi])
    ax.bar(
        range(len(names)),
        v,
        color=[_COLORS[i % len(_COLORS)] for i in range(len(names))],
        yerr=yerr,
        capsize=4,
    )
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=20, fontsize=8)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    return _png(fig)


def curves(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    xlabel: str,
    ylabel: str,
    title: str = "",
) -> bytes:
    """Line plot of ``(x, y)`` series (for example a metric over epochs), one line per name."""
    plt = _plt()
    fig, ax = plt.subplots(layout="constrained", figsize=(5.0, 3.2))
    for i, (name, (xs, ys)) in enumerate(series.items()):
        ax.plot(xs, ys, marker="o", ms=3, color=_COLORS[i % len(_COLORS)], label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return _png(fig)


def curves_grid(
    panels: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]],
    xlabel: str,
    cols: int = 3,
) -> bytes:
    """Several small line plots in one figure: ``{panel title: {name: (x, y)}}``."""
    plt = _plt()
    n = max(1, len(panels))
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    fig, axes = plt.subplots(
        rows, cols, layout="constrained", figsize=(3.6 * cols, 2.6 * rows), squeeze=False
    )
    # colours by first appearance (the runs' order), as in every other figure of the report
    names = list(dict.fromkeys(name for series in panels.values() for name in series))
    for ax, (title, series) in zip(axes.ravel(), panels.items(), strict=False):
        for name, (xs, ys) in series.items():
            c = _COLORS[names.index(name) % len(_COLORS)]
            ax.plot(xs, ys, marker="o", ms=3, color=c, label=name)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    axes[0][0].legend(fontsize=7)
    return _png(fig)


def epoch_curves(runs: Sequence[Any]) -> bytes | None:
    """One panel per number logged per epoch (``analysis/*`` and the validation accuracies),
    a curve per run; None when no run logged any."""
    keys = sorted(
        {
            k
            for r in runs
            for rec in r.epochs
            for k in rec
            if (k.startswith("analysis/") or (k.startswith("val_") and k.endswith("acc")))
            and isinstance(rec[k], (int, float))
            and not isinstance(rec[k], bool)
        }
    )
    panels = {}
    for k in keys:
        series = {}
        for r in runs:
            pts = [
                (rec["epoch"], rec[k])
                for rec in r.epochs
                if isinstance(rec.get(k), (int, float)) and rec.get("epoch") is not None
            ]
            if pts:
                series[r.name] = ([p[0] for p in pts], [p[1] for p in pts])
        if series:
            panels[k.removeprefix("analysis/")] = series
    return curves_grid(panels, "epoch") if panels else None
