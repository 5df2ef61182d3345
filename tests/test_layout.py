"""The shape of the code base: no source file over 500 lines, no function over 80 lines, and the
layering rule (the training loop never imports ``robustlab.analysis``)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "robustlab"
MAX_FILE_LINES = 500
# Counted from the ``def`` line to the function's last line, docstring excluded: a long
# docstring documents, it does not make a function do more.
MAX_FUNCTION_LINES = 80


def _sources() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "embedded" not in p.parts)


def _function_lengths(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            body0 = node.body[0]
            if (
                isinstance(body0, ast.Expr)
                and isinstance(body0.value, ast.Constant)
                and isinstance(body0.value.value, str)
            ):
                n -= body0.end_lineno - body0.lineno + 1
            out.append((node.name, n))
    return out


def test_no_source_file_over_500_lines() -> None:
    long = {
        str(p.relative_to(PKG)): n
        for p in _sources()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES
    }
    assert not long, f"files over {MAX_FILE_LINES} lines: {long}"


def test_no_function_over_80_lines() -> None:
    long = {
        f"{p.relative_to(PKG)}:{name}": n
        for p in _sources()
        for name, n in _function_lengths(p)
        if n > MAX_FUNCTION_LINES
    }
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def test_training_never_imports_analysis() -> None:
    """No import of ``robustlab.analysis`` (nor a module name for a lazy import) under
    ``robustlab/train``: callbacks are built where a run is composed."""
    for p in sorted((PKG / "train").glob("*.py")):
        tree = ast.parse(p.read_text(encoding="utf-8"))
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names = [] if id(node) in docs else [node.value]
            else:
                continue
            bad = [n for n in names if n.startswith(("robustlab.analysis", "robustlab.report"))]
            assert not bad, f"{p.name} refers to {bad}"
