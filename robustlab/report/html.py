"""The self-contained HTML report: runs side by side, accuracy and analysis tables, figures
embedded as base64 PNG, opening from disk with no server and no network.

:func:`load_run` reads what a run directory holds (configuration, summaries, evaluation,
analysis arrays, per-epoch metrics); :func:`comparison_figures` draws the paper figures for
one or more runs from those arrays; :func:`write_run_figures` saves them as PNG files under
``RUN/analysis/``; :func:`build_report` writes the page.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from robustlab.analysis.logits import confidence_disagreement
from robustlab.analysis.run import read_analysis
from robustlab.errors import RobustlabError
from robustlab.io import atomic_write_bytes, atomic_write_text
from robustlab.report import figures as F
from robustlab.report.sweep import origin_note, sweep_figure
from robustlab.report.text import INTRO, SECTIONS

__all__ = ["RunData", "load_run", "comparison_figures", "write_run_figures", "build_report"]


@dataclass
class RunData:
    """Everything the report shows about one run directory."""

    path: Path
    name: str
    config: dict[str, Any]
    summary: dict[str, Any]
    evals: dict[str, Any]
    analysis: dict[str, Any]
    arrays: dict[str, dict[str, np.ndarray]]
    epochs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def dataset(self) -> str:
        return str(
            self.analysis.get("meta", {}).get("dataset")
            or self.config.get("data", {}).get("dataset")
            or "?"
        )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise RobustlabError(f"cannot read {path}: {e}") from None


def load_run(run_dir: str | Path, name: str | None = None) -> RunData:
    """Read a run directory; a folder without ``config.yaml`` is a clear error."""
    run = Path(run_dir)
    if not run.is_dir():
        raise RobustlabError(f"run directory not found: {run}")
    cfg_path = run / "config.yaml"
    if not cfg_path.is_file():
        raise RobustlabError(f"{run} is not a run directory (no config.yaml)")
    try:
        config = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise RobustlabError(f"cannot read {cfg_path}: {e}") from None
    summary = _read_json(run / "summary.json") if (run / "summary.json").is_file() else {}
    evals: dict[str, Any] = {}
    if (run / "eval").is_dir():
        for p in sorted((run / "eval").glob("*.json")):
            evals[p.stem] = _read_json(p)
    analysis, arrays = read_analysis(run)
    epochs: list[dict[str, Any]] = []
    metrics = run / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            if isinstance(rec, dict) and rec.get("kind", "epoch") == "epoch":
                epochs.append(rec)
    return RunData(run, name or run.name, config, summary, evals, analysis, arrays, epochs)


def _finite(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v[np.isfinite(v)]


def _same_samples(a: RunData, b: RunData) -> bool:
    sa, sb = a.arrays.get("samples"), b.arrays.get("samples")
    return (
        sa is not None
        and sb is not None
        and sa["index"].shape == sb["index"].shape
        and bool((sa["index"] == sb["index"]).all())
    )


def _training_eps(run: RunData) -> float | None:
    """The eps a run was trained at (0 without one); None when it cannot be read."""
    obj = run.config.get("objective", {}) or {}
    eps = (obj.get("params", {}) or {}).get("eps", 0.0)
    try:
        from robustlab.attacks.threat import parse_eps

        return 0.0 if eps in (0, 0.0, None) else parse_eps(eps)
    except Exception:  # noqa: BLE001 (a hand-edited config: leave this run out of the plot)
        return None


def comparison_figures(runs: Sequence[RunData], top_n: int = 8) -> list[tuple[str, str, bytes]]:
    """``(section, caption, png)`` for every figure the runs' analyses allow."""
    figs: list[tuple[str, str, bytes]] = []
    with_ = lambda key: [r for r in runs if key in r.arrays]  # noqa: E731
    lr = with_("logits")
    if lr:
        for stat, label in [
            ("max_logit", "max logit  max_k z_k"),
            ("gap", "logit gap  z_(1) - z_(2)"),
            ("confidence", "confidence  max_k p_k"),
            ("entropy", "entropy  H(p) (nats)"),
        ]:
            png = F.overlay_histograms({r.name: r.arrays["logits"][stat] for r in lr}, label)
            figs.append(("logits", f"Distribution of the {label} on the test sample.", png))
    pts = [(e, r) for r in lr if (e := _training_eps(r)) is not None]
    if len({e for e, _ in pts}) >= 2:
        pts.sort(key=lambda p: p[0])
        series = {
            label: ([e for e, _ in pts], [float(r.arrays["logits"][key].mean()) for _, r in pts])
            for key, label in (("max_logit", "mean max logit"), ("gap", "mean logit gap"))
        }
        figs.append(
            (
                "logits",
                "Mean max logit and mean logit gap against the training eps of each run "
                "(0 for objectives without an eps).",
                F.curves(series, "training eps", "logit statistic"),
            )
        )
    for i, a in enumerate(lr):
        for b in lr[i + 1 :]:
            if not _same_samples(a, b):
                continue
            d = confidence_disagreement(
                a.arrays["logits"]["confidence"], b.arrays["logits"]["confidence"], top_n=top_n
            )
            figs.append(
                (
                    "disagreement",
                    f"Confidence percentile ranks of {a.name} and {b.name} (Spearman rho "
                    f"{d['spearman']:.3f}); marked: the {top_n} samples each model ranks "
                    "most above the other.",
                    F.confidence_scatter(
                        d["rank_a"],
                        d["rank_b"],
                        a.name,
                        b.name,
                        d["a_over_b"],
                        d["b_over_a"],
                        rho=d["spearman"],
                    ),
                )
            )
            imgs = a.arrays["samples"]["images"]
            labels = a.arrays["samples"]["labels"]
            for key, who, other in (("a_over_b", a, b), ("b_over_a", b, a)):
                idx = d[key]
                caps = [f"y={labels[j]} {d['rank_diff'][j]:+.0f}" for j in idx]
                figs.append(
                    (
                        "disagreement",
                        f"Samples {who.name} is most confident about relative to {other.name} "
                        f"(caption: label, rank difference {a.name} - {b.name} in percentiles).",
                        F.image_grid(imgs[idx], caps, title=f"{who.name} >> {other.name}"),
                    )
                )
    by_norm: dict[tuple[str, float], list[RunData]] = {}
    for r in with_("margins"):
        m = r.analysis.get("margins", {})
        by_norm.setdefault((str(m.get("norm", "")), float(m.get("eps", math.nan))), []).append(r)
    for (norm, eps), mr in by_norm.items():  # runs analysed at another norm get their own figure
        series = {}
        for r in mr:
            m = r.arrays["margins"]
            ok = m["verified"].astype(bool) & m["correct"].astype(bool)
            series[r.name] = m["margin"][ok]
        figs.append(
            (
                "margins",
                f"Minimal {norm} perturbation margins of correctly classified, verified points "
                f"(dotted: eps = {eps:.4g}).",
                F.overlay_histograms(series, f"{norm} margin", vline=eps if eps == eps else None),
            )
        )
    dr = [r for r in runs if "objectives" in r.analysis.get("dynamics", {})]
    if dr:
        eps = float(dr[0].analysis["dynamics"]["eps"])
        res = {
            f"{r.name}: {label}": d
            for r in dr
            for label, d in r.analysis["dynamics"]["objectives"].items()
        }
        figs.append(
            (
                "dynamics",
                "Conflicting boundary dynamics: per margin bin (width eps/4, last bin open), the "
                "fraction of points the boundary moves away from (up) and towards (down) under one "
                "gradient step of the objective named in each panel (run: objective).",
                F.conflicting_dynamics_figure(res, eps),
            )
        )
    for key, arr, label, section in [
        ("jacobian", "jacobian_fro", "logit-Jacobian Frobenius norm |dz/dx|_F", "jacobian"),
        ("fisher", "fisher_fro", "input Fisher information |F(x)|_F", "fisher"),
    ]:
        rs = with_(key)
        if not rs:
            continue
        figs.append(
            (
                section,
                f"Distribution of the {label} on the test sample.",
                F.overlay_histograms({r.name: _finite(r.arrays[key][arr]) for r in rs}, label),
            )
        )
        means = {r.name: float(_finite(r.arrays[key][arr]).mean()) for r in rs}
        prefix = "fro" if key == "jacobian" else "fisher_fro"
        errs = {
            r.name: (r.analysis[key][f"{prefix}_ci_low"], r.analysis[key][f"{prefix}_ci_high"])
            for r in rs
            if f"{prefix}_ci_low" in r.analysis.get(key, {})
        }
        figs.append(
            (
                section,
                f"Mean {label} per run (error bars: 95% bootstrap CI of the mean).",
                F.bar_chart(means, f"mean {arr}", errors=errs if len(errs) == len(means) else None),
            )
        )
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
    if panels:
        figs.append(
            (
                "epochs",
                "Statistics recorded per epoch by the analysis training callback "
                "(analysis/* in metrics.jsonl) and the validation accuracies.",
                F.curves_grid(panels, "epoch"),
            )
        )
    return figs


def write_run_figures(run_dir: str | Path) -> list[Path]:
    """Draw one run's figures from its analysis arrays into ``RUN/analysis/*.png``."""
    run = load_run(run_dir)
    out = []
    counts: dict[str, int] = {}
    for section, _caption, png in comparison_figures([run]):
        counts[section] = counts.get(section, 0) + 1
        path = run.path / "analysis" / f"{section}_{counts[section]}.png"
        atomic_write_bytes(path, png)
        out.append(path)
    return out


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


# (analysis, key, label): rows of the analysis table; keys with _mean get the CI appended.
_ROWS = [
    ("logits", "max_logit", "mean max logit"),
    ("logits", "gap", "mean logit gap z(1) - z(2)"),
    ("logits", "gap_to_mean", "mean gap to mean logit"),
    ("logits", "confidence", "mean confidence"),
    ("logits", "entropy", "mean entropy (nats)"),
    ("logits", "true_prob", "mean true-class probability"),
    ("logits", "correct", "clean accuracy (sample)"),
    ("margins", "margin", "mean margin (correct, verified)"),
    ("margins", "median_margin", "median margin"),
    ("margins", "frac_margin_below_eps", "fraction with margin < eps (or wrong)"),
    ("margins", "frac_verified", "fraction of margins verified"),
    ("jacobian", "fro", "mean |dz/dx|_F"),
    ("jacobian", "spec", "mean |dz/dx|_2"),
    ("fisher", "fisher_fro", "mean |F(x)|_F"),
    ("fisher", "fisher_top_eig", "mean top eigenvalue of F(x)"),
    ("fisher", "fisher_trace", "mean trace of F(x)"),
    ("fisher", "kl_metric", "cross-class KL metric"),
    ("fisher", "kl_metric_over_fisher_fro", "KL metric / mean |F|_F"),
]


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


def _cell(run: RunData, analysis: str, key: str) -> str:
    s = run.analysis.get(analysis)
    if not isinstance(s, dict):
        return "–"
    if key in s and isinstance(s[key], dict):  # a summarize() entry
        d = s[key]
        ci = f"[{_fmt(d['ci_low'])}, {_fmt(d['ci_high'])}]"
        return f"{_fmt(d['mean'])} <span class='note'>{ci}</span>"
    if f"{key}_mean" in s:
        lo, hi = s.get(f"{key}_ci_low"), s.get(f"{key}_ci_high")
        ci = f" <span class='note'>[{_fmt(lo)}, {_fmt(hi)}]</span>" if lo is not None else ""
        return _fmt(s[f"{key}_mean"]) + ci
    return _fmt(s.get(key)) if key in s else "–"


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


def _robust_eval(run: RunData) -> dict[str, Any] | None:
    """The run's ``robustlab eval`` summary (``eval/summary.json``) if it has one."""
    for name in ("summary", *sorted(run.evals)):
        ev = run.evals.get(name)
        if isinstance(ev, dict) and "robust_accuracy" in ev:
            return ev
    return None


def _accuracy_table(runs: Sequence[RunData]) -> str:
    rows = []
    for r in runs:
        obj = r.config.get("objective", {}) or {}
        params = obj.get("params", {}) or {}
        model = (r.config.get("model", {}) or {}).get("name", "?")
        epochs = (r.config.get("train", {}) or {}).get("epochs", "?")
        ev = _robust_eval(r)
        if ev is not None:
            clean = _fmt(ev.get("clean_accuracy"))
            robust = (
                f"{_fmt(ev.get('robust_accuracy'))} <span class='note'>"
                f"({html.escape(str(ev.get('attack')))}, {html.escape(str(ev.get('norm')))} "
                f"eps={_fmt(ev.get('eps'))}, n={_fmt(ev.get('n'))})</span>"
            )
        else:
            clean = robust = "– <span class='note'>(no robustlab eval)</span>"
        train_acc = {k: v for k, v in _numbers(r.summary).items() if "acc" in k.lower()}
        acc_s = "<br>".join(f"{html.escape(k)}: {_fmt(v)}" for k, v in train_acc.items()) or "–"
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


def _dynamics_rows(runs: Sequence[RunData]) -> list[str]:
    """One row per (statistic, objective) of the boundary-dynamics analysis."""
    per_run = [r.analysis.get("dynamics", {}).get("objectives", {}) for r in runs]
    rows = []
    for label in sorted({lab for d in per_run for lab in d}):
        for key, text in (
            ("frac_negative_speed", "fraction of negative speeds"),
            ("frac_negative_below_eps", "fraction negative among margin < eps"),
        ):
            cells = "".join(f"<td>{_fmt(d.get(label, {}).get(key))}</td>" for d in per_run)
            rows.append(f"<tr><td>{html.escape(text)} ({html.escape(label)})</td>{cells}</tr>")
    return rows


def _analysis_table(runs: Sequence[RunData]) -> str:
    head = "<tr><th>statistic</th>" + "".join(f"<th>{html.escape(r.name)}</th>" for r in runs)
    body = []
    for analysis, key, label in _ROWS:
        if not any(analysis in r.analysis for r in runs):
            continue
        cells = "".join(f"<td>{_cell(r, analysis, key)}</td>" for r in runs)
        body.append(f"<tr><td>{html.escape(label)}</td>{cells}</tr>")
    body += _dynamics_rows(runs)
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
    figs = comparison_figures(runs) + sweep_figure(runs)
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
    for section, heading, definition in SECTIONS:
        items = [(c, png) for s, c, png in figs if s == section]
        if not items:
            continue
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.append(f"<p class='note'>{html.escape(definition)}</p>")
        cls = " class='wide'" if section in ("dynamics", "epochs") else ""
        for caption, png in items:
            parts.append(
                f"<figure{cls}>{_img(png, caption)}<figcaption>{html.escape(caption)}"
                "</figcaption></figure>"
            )
    parts.append("</body></html>")
    out = Path(out)
    atomic_write_text(out, "\n".join(parts))
    return out
