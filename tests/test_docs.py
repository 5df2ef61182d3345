"""The documentation's tutorials run: every ```bash and ```python block of a tutorial page is
executed, in order, as one script in a fresh directory (small sizes through the environment
variables each page declares), and the files the page promises are checked. The blocks carry
their own checks (``assert``/``grep -q``), so a page whose numbers or outputs drift fails here.

Executing a page takes a minute or more on 2 cores: those tests are slow and run as their own
step of ``.ci/run``; the fast test checks that every tutorial in ``mkdocs.yml`` is covered.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```\s*$", re.M | re.S)
RUNS = ("bash", "python")  # other fences (console, sh, text, yaml) are shown, not run


@dataclass
class Page:
    env: dict[str, str] = field(default_factory=dict)  # small sizes for CI
    files: list[str] = field(default_factory=list)  # outputs the page must leave behind
    shared: bool = False  # needs the shared data/models (skipped without them)
    timeout: int = 600


PAGES = {
    "tutorials/evaluate-checkpoint.md": Page(
        env={"N": "200", "N_AA": "4"},
        files=["clean.json", "remapped.json", "normalized.json", "eval-aa/summary.json"],
        shared=True,
    ),
    "tutorials/pgd-at-vs-dyart.md": Page(
        env={"N_TRAIN": "600", "EPOCHS": "1", "N": "100"},
        files=["runs/burn-in/summary.json", "runs/pgd-at/summary.json", "runs/dyart/summary.json"],
    ),
    "tutorials/analyze-and-report.md": Page(
        env={"N_TRAIN": "600", "EPOCHS": "1", "N": "16"},
        files=["report.html", "runs/standard/analysis/summary.json"],
    ),
    "tutorials/reproduce.md": Page(
        env={"N_TRAIN": "600", "EPOCHS": "1", "N": "100", "SCALE": "tiny", "SEEDS": "0"},
        files=["claim-a1.json", "reproduce/claims.json", "reproduce/report.html"],
        shared=True,  # claim A4 reads the TRADES SmallCNN from $ROBUSTLAB_SHARED
    ),
}


def code_blocks(page: Path) -> list[tuple[str, str]]:
    """The (language, code) of each fenced block of ``page`` that is run."""
    return [(m[1], m[2]) for m in FENCE.finditer(page.read_text()) if m[1] in RUNS]


def page_script(page: Path) -> str:
    """One bash script running the page's blocks in order (python blocks as heredocs)."""
    parts = ["set -euo pipefail"]
    for i, (lang, code) in enumerate(code_blocks(page)):
        parts.append(f"echo '--- block {i} ({lang})' >&2")
        if lang == "bash":
            parts.append(code)
        else:
            parts.append(f"python - <<'ROBUSTLAB_DOCS_EOF'\n{code}ROBUSTLAB_DOCS_EOF")
    return "\n".join(parts) + "\n"


def _nav_pages(nav: object) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [p for v in nav.values() for p in _nav_pages(v)]
    if isinstance(nav, list):
        return [p for v in nav for p in _nav_pages(v)]
    return []


def test_every_tutorial_is_executed_here() -> None:
    nav = yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"]
    tutorials = {p for p in _nav_pages(nav) if p.startswith("tutorials/")}
    assert tutorials == set(PAGES)
    for name in PAGES:
        blocks = code_blocks(DOCS / name)
        assert len(blocks) >= 3 and {lang for lang, _ in blocks} == set(RUNS), name
        script = page_script(DOCS / name)
        assert script.count("ROBUSTLAB_DOCS_EOF") == 2 * sum(lg == "python" for lg, _ in blocks)
        for var in PAGES[name].env:  # the page declares every size CI overrides
            assert re.search(rf"^{var}=\$\{{{var}:-", script, re.M), (name, var)


def _shims(folder: Path) -> Path:
    """``robustlab`` and ``python`` commands running this interpreter (and its robustlab)."""
    folder.mkdir()
    commands = {"robustlab": f'"{sys.executable}" -m robustlab', "python": f'"{sys.executable}"'}
    for name, cmd in commands.items():
        shim = folder / name
        shim.write_text(f'#!/bin/sh\nexec {cmd} "$@"\n')
        shim.chmod(0o755)
    return folder


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", sorted(PAGES))
def test_tutorial_page_runs(name: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    spec = PAGES[name]
    env = dict(os.environ)
    env.update(spec.env, OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"), MPLBACKEND="Agg")
    if spec.shared:
        env["CKPT"] = str(request.getfixturevalue("trades_checkpoint"))
    env["PATH"] = f"{_shims(tmp_path / 'bin')}{os.pathsep}{env['PATH']}"
    work = tmp_path / "work"
    work.mkdir()
    script = work / "page.sh"
    script.write_text(page_script(DOCS / name))
    proc = subprocess.run(
        ["bash", str(script)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=spec.timeout,
    )
    assert proc.returncode == 0, f"{name}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    for f in spec.files:
        assert (work / f).is_file(), f


# Internal documents a user cannot read: the docs, docstrings, recipes, option values and the
# report cite papers by title and arXiv id instead.
INTERNAL = re.compile(
    r"brief[ -]?[AB]\b|method brief|paper [A-D]\b|methods\.md|analysis docstrings|\bpilot\b"
    r"|as the brief|\[recon\]",
    re.I,
)


def test_user_facing_text_cites_no_internal_documents() -> None:
    files = [
        *(REPO / "robustlab").rglob("*.py"),
        *(REPO / "recipes").rglob("*.yaml"),
        *DOCS.rglob("*.md"),
        REPO / "README.md",
        REPO / "mkdocs.yml",
    ]
    hits = [
        f"{f.relative_to(REPO)}:{i}: {line.strip()}"
        for f in files
        for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1)
        if INTERNAL.search(line)
    ]
    assert not hits, "\n".join(hits)
    from robustlab.report.text import INTRO, SECTIONS

    for text in (INTRO, *(t for s in SECTIONS for t in s)):
        assert not INTERNAL.search(text), text
