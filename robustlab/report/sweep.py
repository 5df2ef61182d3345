"""The report's robust-accuracy-against-eps figure and the origin notes of imported runs.

One job: from each run's ``eval/*.json`` summaries (``robustlab eval --eps-sweep``), one
figure with robust accuracy against eps for every run that has a sweep (one line per run and
attack; the clean accuracy at eps 0); and, for runs imported from third-party weights
(``summary.json["imported"]``), a line saying where the weights came from and which input
normalization the model applies.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from robustlab.report import figures as F

__all__ = ["sweep_series", "sweep_figure", "origin_note"]


def sweep_series(run: Any) -> dict[str, tuple[list[float], list[float]]]:
    """``{label: (eps, robust accuracy)}`` of every eval summary of ``run`` with a sweep."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    for name, ev in sorted(run.evals.items()):
        rows = ev.get("eps_sweep") if isinstance(ev, dict) else None
        if not rows:
            continue
        pts = sorted((float(r["eps"]), float(r["robust_accuracy"])) for r in rows)
        clean = ev.get("clean_accuracy")
        if clean is not None and pts[0][0] > 0:
            pts.insert(0, (0.0, float(clean)))
        label = run.name if len(run.evals) == 1 else f"{run.name} ({name})"
        attack = ev.get("attack")
        if attack:
            label += f": {attack}"
        out[label] = ([p[0] for p in pts], [p[1] for p in pts])
    return out


def sweep_figure(runs: Sequence[Any]) -> list[tuple[str, str, bytes]]:
    """``[("sweep", caption, png)]`` when any run has an eps sweep, else ``[]``."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    norms = set()
    for r in runs:
        series.update(sweep_series(r))
        norms |= {str(ev.get("norm")) for ev in r.evals.values() if isinstance(ev, dict)}
    if not series:
        return []
    norm = "/".join(sorted(n for n in norms if n != "None")) or "threat"
    caption = (
        f"Robust accuracy against the {norm} eps for every run evaluated with "
        "robustlab eval --eps-sweep (eps 0: clean accuracy)."
    )
    png = F.curves(series, f"eps ({norm})", "robust accuracy")
    return [("sweep", caption, png)]


def origin_note(run: Any) -> str:
    """HTML: where an imported run's weights came from (empty for a trained run)."""
    origin = run.summary.get("imported") if isinstance(run.summary, dict) else None
    if not isinstance(origin, dict):
        return ""
    norm = origin.get("input_normalization") or {}
    if norm.get("applied"):
        ntext = f"input normalization (x - {norm.get('mean')}) / {norm.get('std')}"
    else:
        ntext = "no input normalization"
    sha = str(origin.get("sha256", ""))[:12]
    return (
        f"<br><span class='note'>imported weights: {html.escape(str(origin.get('weights')))} "
        f"(sha256 {html.escape(sha)}…, remap {html.escape(str(origin.get('remap')))}; "
        f"{html.escape(ntext)})</span>"
    )
