"""What a reproduction writes: ``claims.json`` (checked against its schema), ``claims.md``
(one table per paper), the figures and the HTML report with one section per paper, plus the
machine and timing record (``run.json``).

Layout under the run root: ``results/<paper>/{claims.json, claims.md, run.json, *.png}`` for
each paper, and ``claims.json``, ``claims.md``, ``report.html`` merging every paper present.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import os
import platform
from pathlib import Path
from typing import Any

from robustlab.errors import RobustlabError
from robustlab.io import atomic_write_bytes, atomic_write_text, write_json
from robustlab.reproduce.claims import CLAIMS_SCHEMA_VERSION, SOURCES, VERDICTS, Claim

__all__ = [
    "validate_claims",
    "claims_document",
    "claims_markdown",
    "machine_info",
    "write_paper_outputs",
    "write_merged_outputs",
]

_CLAIM_KEYS = {
    "id": str,
    "paper": str,
    "statement": str,
    "source": str,
    "verdict": str,
    "seeds": list,
    "n_test": int,
    "comparisons": list,
    "notes": str,
    "tables": dict,
}
_COMP_KEYS = {
    "quantity": str,
    "expect": str,
    "per_seed": list,
    "mean": (float, int, type(None)),
    "sd": (float, int, type(None)),
    "interval": list,
    "verdict": str,
    "details": dict,
}


def source_label(source: str) -> str:
    """A claim's source tag as a reader sees it: ``paper`` (stated by the paper) or
    ``reconstruction`` (a reading of the paper that its text does not state)."""
    return "reconstruction" if source == "recon" else source


def validate_claims(doc: Any) -> None:
    """Raise :class:`RobustlabError` naming the first field that breaks the schema."""
    if not isinstance(doc, dict) or doc.get("schema_version") != CLAIMS_SCHEMA_VERSION:
        raise RobustlabError(f"claims.json: schema_version must be {CLAIMS_SCHEMA_VERSION}")
    if not isinstance(doc.get("claims"), list):
        raise RobustlabError("claims.json: 'claims' must be a list")
    for c in doc["claims"]:
        for k, tp in _CLAIM_KEYS.items():
            if not isinstance(c.get(k), tp):
                raise RobustlabError(f"claims.json: claim {c.get('id')!r}: bad or missing {k!r}")
        if c["verdict"] not in VERDICTS or c["source"] not in SOURCES:
            raise RobustlabError(f"claims.json: claim {c['id']}: bad verdict or source")
        if not c["comparisons"]:
            raise RobustlabError(f"claims.json: claim {c['id']}: no comparisons")
        for comp in c["comparisons"]:
            for k, tp in _COMP_KEYS.items():
                if not isinstance(comp.get(k), tp):
                    raise RobustlabError(f"claims.json: claim {c['id']}: comparison field {k!r}")
            if len(comp["per_seed"]) != len(c["seeds"]) or len(comp["interval"]) != 2:
                raise RobustlabError(f"claims.json: claim {c['id']}: per-seed values or interval")
            if comp["verdict"] not in VERDICTS or comp["expect"] not in ("positive", "negative"):
                raise RobustlabError(f"claims.json: claim {c['id']}: comparison verdict/expect")


def claims_document(claims: list[Claim], meta: dict[str, Any]) -> dict[str, Any]:
    doc = {
        "schema_version": CLAIMS_SCHEMA_VERSION,
        "meta": meta,
        "claims": [c.to_dict() for c in claims],
    }
    validate_claims(doc)
    return doc


def _f(v: Any, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def claims_markdown(doc: dict[str, Any], titles: dict[str, str]) -> str:
    """One table per paper: claim, measured quantity, per-seed values, mean ± sd, interval,
    verdict (one row per comparison; the claim's verdict on its first row)."""
    lines: list[str] = []
    papers = list(dict.fromkeys(c["paper"] for c in doc["claims"]))
    for paper in papers:
        lines += [f"## {titles.get(paper, paper)} (`{paper}`)", ""]
        lines.append(
            "| claim | verdict | quantity (claimed sign) | per seed | mean ± sd | 95% CI | part |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        for c in doc["claims"]:
            if c["paper"] != paper:
                continue
            for i, comp in enumerate(c["comparisons"]):
                head = f"**{c['id']}** [{source_label(c['source'])}]" if i == 0 else ""
                verdict = f"**{c['verdict']}**" if i == 0 else ""
                sign = "+" if comp["expect"] == "positive" else "−"
                seeds = ", ".join(_f(v) for v in comp["per_seed"])
                lo, hi = comp["interval"]
                lines.append(
                    f"| {head} | {verdict} | {comp['quantity']} ({sign}) | {seeds} | "
                    f"{_f(comp['mean'])} ± {_f(comp['sd'])} | [{_f(lo)}, {_f(hi)}] | "
                    f"{comp['verdict']} |"
                )
        lines.append("")
        for c in doc["claims"]:
            if c["paper"] == paper:
                lines.append(
                    f"- **{c['id']}**: {c['statement']}" + (f" {c['notes']}" if c["notes"] else "")
                )
        lines.append("")
        for c in doc["claims"]:
            if c["paper"] == paper:
                for name, table in c["tables"].items():
                    lines += _table_md(f"{c['id']}: {name}", table)
    return "\n".join(lines)


def _table_md(title: str, table: dict[str, Any]) -> list[str]:
    """``{"columns": [...], "rows": [[...], ...]}`` as a Markdown table."""
    cols, rows = table.get("columns", []), table.get("rows", [])
    out = [f"**{title}**", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(_f(v) if isinstance(v, float) else str(v) for v in r) + " |")
    return out + [""]


def machine_info() -> dict[str, Any]:
    """CPU model, core and thread counts, load average, torch version and GPU (if any)."""
    import torch

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    if hasattr(os, "getloadavg"):
        info["load_average"] = [round(v, 2) for v in os.getloadavg()]
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write_paper_outputs(
    root: Path,
    paper: str,
    title: str,
    claims: list[Claim],
    figures: list[tuple[str, str, bytes]],
    meta: dict[str, Any],
) -> Path:
    """``results/<paper>/``: claims.json, claims.md, run.json and the PNG figures."""
    out = root / "results" / paper
    doc = claims_document(claims, meta)
    for name, _, png in figures:
        atomic_write_bytes(out / name, png)
    write_json(out / "figures.json", [{"file": n, "caption": c} for n, c, _ in figures])
    write_json(out / "run.json", meta)
    atomic_write_text(
        out / "claims.md",
        f"# {title}\n\n" + _run_line(meta) + "\n\n" + claims_markdown(doc, {paper: title}),
    )
    write_json(out / "claims.json", doc)
    return out


def _run_line(meta: dict[str, Any]) -> str:
    m = meta.get("machine", {})
    return (
        f"Command: `{meta.get('command', '')}`  \n"
        f"Wall time: {meta.get('wall_seconds', 0) / 60:.1f} min; CPU time (user + system, all "
        f"processes): {_minutes(meta.get('cpu_seconds'))} ({meta.get('trained', 0)} runs "
        f"trained, {meta.get('reused', 0)} reused); machine: {m.get('cpu', '?')}, "
        f"{m.get('cpu_count', '?')} CPUs, {m.get('torch_threads', '?')} torch thread(s) per "
        f"process, {meta.get('jobs', 1)} job(s); load average at start/end "
        f"{meta.get('load_start')} / {meta.get('load_end')}."
    )


def _minutes(seconds: float | None) -> str:
    return "not recorded" if seconds is None else f"{seconds / 60:.1f} min"


def write_merged_outputs(root: Path, titles: dict[str, str]) -> None:
    """Merge every ``results/<paper>/`` into ``claims.json``, ``claims.md``, ``report.html``."""
    papers = sorted(p for p in (root / "results").glob("*/claims.json"))
    docs = {p.parent.name: json.loads(p.read_text(encoding="utf-8")) for p in papers}
    merged = {
        "schema_version": CLAIMS_SCHEMA_VERSION,
        "meta": {name: d["meta"] for name, d in docs.items()},
        "claims": [c for d in docs.values() for c in d["claims"]],
    }
    validate_claims(merged)
    write_json(root / "claims.json", merged)
    atomic_write_text(
        root / "claims.md", "# Reproduced claims\n\n" + claims_markdown(merged, titles)
    )
    atomic_write_text(root / "report.html", _report_html(root, docs, titles))


_CSS = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;font-size:13px;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}"
    "figure{display:inline-block;margin:8px;vertical-align:top}img{max-width:100%}"
    ".holds{color:#1a7f37;font-weight:bold}.mixed{color:#9a6700;font-weight:bold}"
    ".fails{color:#cf222e;font-weight:bold}.note{color:#555;font-size:13px}"
)


def _report_html(root: Path, docs: dict[str, dict], titles: dict[str, str]) -> str:
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<link rel='icon' href='data:,'><title>robustlab reproduce</title>",
        f"<style>{_CSS}</style></head><body><h1>Reproduced claims</h1>",
        f"<p class='note'>Generated {now} by robustlab reproduce. Verdicts: holds = the claimed "
        "direction in every seed and a 95% bootstrap interval (over test images) of the "
        "seed-mean excluding zero; fails = the seed mean goes the other way; mixed = "
        "otherwise.</p>",
    ]
    for paper, doc in docs.items():
        parts.append(f"<h2>{html.escape(titles.get(paper, paper))}</h2>")
        parts.append(f"<p class='note'>{html.escape(_run_line(doc['meta']))}</p>")
        parts.append(
            "<table><tr><th>claim</th><th>verdict</th><th>quantity</th>"
            "<th>per seed</th><th>mean ± sd</th><th>95% CI</th></tr>"
        )
        for c in doc["claims"]:
            for i, comp in enumerate(c["comparisons"]):
                head = (
                    f"<td rowspan={len(c['comparisons'])}><b>{c['id']}</b> "
                    f"[{source_label(c['source'])}]"
                    f"<br>{html.escape(c['statement'])}</td><td rowspan="
                    f"{len(c['comparisons'])} class='{c['verdict']}'>{c['verdict']}</td>"
                    if i == 0
                    else ""
                )
                seeds = ", ".join(_f(v) for v in comp["per_seed"])
                lo, hi = comp["interval"]
                parts.append(
                    f"<tr>{head}<td>{html.escape(comp['quantity'])}</td><td>{seeds}</td>"
                    f"<td>{_f(comp['mean'])} ± {_f(comp['sd'])}</td>"
                    f"<td>[{_f(lo)}, {_f(hi)}] <span class='{comp['verdict']}'>"
                    f"{comp['verdict']}</span></td></tr>"
                )
        parts.append("</table>")
        figs_path = root / "results" / paper / "figures.json"
        figs = json.loads(figs_path.read_text(encoding="utf-8")) if figs_path.is_file() else []
        for f in figs:
            png = (root / "results" / paper / f["file"]).read_bytes()
            b64 = base64.b64encode(png).decode("ascii")
            cap = html.escape(f["caption"])
            parts.append(
                f"<figure><img src='data:image/png;base64,{b64}' alt='{cap}'>"
                f"<figcaption>{cap}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)
