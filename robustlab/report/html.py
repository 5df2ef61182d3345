"""The self-contained HTML report: runs side by side, accuracy and analysis tables, figures
embedded as base64 PNG, opening from disk with no server and no network.

:func:`~robustlab.report.rundata.load_run` reads what a run directory holds;
:func:`comparison_figures` asks every registered analysis for its figures (plus the per-epoch
curves); :func:`write_run_figures` saves them as PNG files under ``RUN/analysis/``;
:func:`build_report` writes the page, whose sections and analysis rows are loops over the
analysis registry (``robustlab.analysis.base``).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robustlab.analysis.base import Figure, registered_analyses
from robustlab.errors import RobustlabError
from robustlab.io import atomic_write_bytes, atomic_write_text
from robustlab.report import figures as F
from robustlab.report.rundata import RunData, load_run
from robustlab.report.sweep import origin_note, sweep_figure
from robustlab.report.text import INTRO, report_sections
from robustlab.train.rundir import RunDir

__all__ = ["RunData", "load_run", "comparison_figures", "write_run_figures", "build_report"]


def comparison_figures(runs: Sequence[RunData]) -> list[Figure]:
    """Every figure the runs' stored results allow: each registered analysis's own (in
    registry order), then the per-epoch curves."""
    figs: list[Figure] = []
    for analysis in registered_analyses():
        figs += analysis.figures(runs, F)
    epochs = F.epoch_curves(runs)
    if epochs is not None:
        caption = (
            "Statistics recorded per epoch by the analysis training callback "
            "(analysis/* in metrics.jsonl) and the validation accuracies."
        )
        figs.append(Figure("epochs", caption, epochs, wide=True))
    return figs


def write_run_figures(run_dir: str | Path) -> list[Path]:
    """Draw one run's figures from its analysis arrays into ``RUN/analysis/*.png``.

    Each file is named ``<section>_<what it shows>.png`` (from the caption). PNG files of
    ``RUN/analysis/`` that this call did not draw are removed, so after re-running an analysis
    the folder holds exactly the figures of the stored arrays (none from another selection).
    """
    run = load_run(run_dir)
    rd = RunDir(run.path)
    out: list[Path] = []
    for fig in comparison_figures([run]):
        stem = f"{fig.section}_{_slug(fig.caption)}"
        path, i = rd.analysis_figure(stem), 2
        while path in out:
            path, i = rd.analysis_figure(f"{stem}_{i}"), i + 1
        atomic_write_bytes(path, fig.png)
        out.append(path)
    for stale in set(rd.analysis_dir.glob("*.png")) - set(out):
        stale.unlink(missing_ok=True)
    return out


def _slug(caption: str, limit: int = 60) -> str:
    """File-name words of a caption: lower case, ``[a-z0-9]`` runs joined by ``-``."""
    words = re.findall(r"[a-z0-9]+", caption.lower())
    slug = "-".join(words)[:limit].rstrip("-")
    return slug or "figure"


# ------------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;
max-width:1200px;color:#222;line-height:1.4}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:2em}
table{border-collapse:collapse;margin:8px 0;font-size:0.9em}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f4f4f4}
figure{display:inline-block;vertical-align:top;margin:8px;max-width:560px}
figure.wide{max-width:1100px}
figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:0.85em;color:#444}.note{color:#666;font-size:0.9em}
"""


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return html.escape(str(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if math.isnan(v):
            return "–"
        return f"{v:.4g}"
    return html.escape(str(v))


def _pct(v: Any) -> str:
    """An accuracy as the command line prints it (``robustlab eval``, training summary)."""
    if isinstance(v, (int, float, np.floating)) and not isinstance(v, bool) and math.isfinite(v):
        return f"{100 * float(v):.2f}%"
    return _fmt(v)


def _cell(v: Any) -> str:
    """A table cell: a number, or a mean with its bootstrap interval in brackets."""
    if isinstance(v, dict):  # a mean with its interval
        lo, hi = v.get("ci_low"), v.get("ci_high")
        ci = f" <span class='note'>[{_fmt(lo)}, {_fmt(hi)}]</span>" if lo is not None else ""
        return _fmt(v.get("mean")) + ci
    return _fmt(v)


def _numbers(d: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten the numeric leaves of a nested dict (``a/b`` keys)."""
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                out.update(_numbers(v, key + "/"))
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                out[key] = v
    return out


def _robust_evals(run: RunData) -> list[dict[str, Any]]:
    """Every ``robustlab eval`` summary of the run (``eval/summary.json`` first)."""
    names = ["summary", *sorted(k for k in run.evals if k != "summary")]
    evs = [run.evals.get(n) for n in names]
    return [ev for ev in evs if isinstance(ev, dict) and "robust_accuracy" in ev]


def _accuracy_table(runs: Sequence[RunData]) -> str:
    rows = []
    for r in runs:
        obj = r.config.get("objective", {}) or {}
        params = obj.get("params", {}) or {}
        model = (r.config.get("model", {}) or {}).get("name", "?")
        epochs = (r.config.get("train", {}) or {}).get("epochs", "?")
        evs = _robust_evals(r)
        if evs:  # every evaluation of the run, one line each
            clean = "<br>".join(_pct(ev.get("clean_accuracy")) for ev in evs)
            robust = "<br>".join(
                f"{_pct(ev.get('robust_accuracy'))} <span class='note'>"
                f"({html.escape(str(ev.get('attack')))}, {html.escape(str(ev.get('norm')))} "
                f"eps={_fmt(ev.get('eps'))}, n={_fmt(ev.get('n'))})</span>"
                for ev in evs
            )
        else:
            clean = robust = "– <span class='note'>(no robustlab eval)</span>"
        train_acc = {k: v for k, v in _numbers(r.summary).items() if "acc" in k.lower()}
        acc_s = "<br>".join(f"{html.escape(k)}: {_pct(v)}" for k, v in train_acc.items()) or "–"
        p = ", ".join(f"{k}={v}" for k, v in params.items())
        rows.append(
            f"<tr><td>{html.escape(r.name)}{origin_note(r)}</td><td>{html.escape(r.dataset)}</td>"
            f"<td>{html.escape(str(model))}</td>"
            f"<td>{html.escape(str(obj.get('name', '?')))} {html.escape(p)}</td>"
            f"<td>{_fmt(epochs)}</td><td>{clean}</td><td>{robust}</td><td>{acc_s}</td></tr>"
        )
    head = "<tr><th>run</th><th>dataset</th><th>model</th><th>objective</th><th>epochs</th>"
    head += "<th>clean accuracy (eval)</th><th>robust accuracy (eval)</th>"
    head += "<th>training summary</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def _analysis_table(runs: Sequence[RunData]) -> str:
    head = "<tr><th>statistic</th>" + "".join(f"<th>{html.escape(r.name)}</th>" for r in runs)
    body = []
    for analysis in registered_analyses():
        summaries = [r.analysis.get(analysis.name) for r in runs]
        if not any(isinstance(x, dict) for x in summaries):
            continue
        for label, values in analysis.rows(summaries):
            cells = "".join(f"<td>{_cell(v)}</td>" for v in values)
            body.append(f"<tr><td>{html.escape(label)}</td>{cells}</tr>")
    if not body:
        return (
            "<p class='note'>No run has been analysed yet: run <code>robustlab analyze</code>.</p>"
        )
    meta = []
    for r in runs:
        m = r.analysis.get("meta", {})
        if m:
            meta.append(
                f"{html.escape(r.name)}: n={m.get('n')}, seed={m.get('seed')}, "
                f"{html.escape(str(m.get('norm')))} eps={_fmt(m.get('eps'))}, "
                f"{html.escape(str(m.get('checkpoint')))}"
            )
    note = (
        "<p class='note'>Means with 95% bootstrap confidence intervals (seeded) in brackets. "
        + "; ".join(meta)
        + ".</p>"
    )
    return f"<table>{head}{''.join(body)}</table>{note}"


def _img(png: bytes, alt: str) -> str:
    b64 = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{b64}" alt="{html.escape(alt)}">'


def build_report(
    run_dirs: Sequence[str | Path], out: str | Path, title: str = "robustlab report"
) -> Path:
    """Write one self-contained HTML page comparing ``run_dirs`` (all on one dataset)."""
    if not run_dirs:
        raise RobustlabError("give at least one run directory")
    names = [Path(p).name for p in run_dirs]
    if len(set(names)) < len(names):  # same folder name under different parents
        names = [f"{Path(p).parent.name}/{Path(p).name}" for p in run_dirs]
    runs = [load_run(p, n) for p, n in zip(run_dirs, names, strict=True)]
    datasets = {r.dataset for r in runs}
    if len(datasets) > 1:
        which = ", ".join(f"{r.name}: {r.dataset}" for r in runs)
        raise RobustlabError(
            f"runs use different datasets ({which}); a report compares runs on one dataset"
        )
    figs = comparison_figures(runs) + [Figure(*f) for f in sweep_figure(runs)]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<link rel='icon' href='data:,'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='note'>{len(runs)} run(s) on {html.escape(datasets.pop())}; generated "
        f"{_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by robustlab. "
        f"{html.escape(INTRO)}</p>",
        "<h2>Runs</h2>",
        _accuracy_table(runs),
        "<h2>Analysis summary</h2>",
        _analysis_table(runs),
    ]
    for section, heading, definition in report_sections():
        items = [f for f in figs if f.section == section]
        if not items:
            continue
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if definition:
            parts.append(f"<p class='note'>{html.escape(definition)}</p>")
        for f in items:
            cls = " class='wide'" if f.wide else ""
            parts.append(
                f"<figure{cls}>{_img(f.png, f.caption)}<figcaption>{html.escape(f.caption)}"
                "</figcaption></figure>"
            )
    parts.append("</body></html>")
    out = Path(out)
    atomic_write_text(out, "\n".join(parts))
    return out
