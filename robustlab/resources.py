"""Files shipped with robustlab: where the recipes are, and ``recipes/...`` paths resolved
against them.

In a clone the recipes are ``recipes/`` at the repository root; an installed wheel carries the
same files as ``robustlab/recipes``. ``robustlab train recipes/cpu/trades.yaml`` therefore
works from any directory: a path that does not exist and starts with ``recipes/`` is looked up
among the shipped recipes.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["recipes_dir", "resolve_recipe", "shipped_recipes"]

_PACKAGE = Path(__file__).resolve().parent


def recipes_dir() -> Path | None:
    """The folder holding the shipped ``cpu/`` and ``paper/`` recipes (None if absent)."""
    for candidate in (_PACKAGE / "recipes", _PACKAGE.parent / "recipes"):
        if candidate.is_dir():
            return candidate
    return None


def shipped_recipes() -> list[str]:
    """The shipped recipes as ``recipes/<folder>/<name>.yaml`` paths, sorted."""
    root = recipes_dir()
    if root is None:
        return []
    return sorted(f"recipes/{p.relative_to(root).as_posix()}" for p in root.glob("*/*.yaml"))


def resolve_recipe(path: str | os.PathLike[str]) -> Path:
    """``path`` itself when it exists; else, for ``recipes/<...>``, the shipped recipe of that
    name when there is one; else ``path`` unchanged (the caller reports it missing)."""
    p = Path(path)
    if p.exists() or p.is_absolute() or not p.parts or p.parts[0] != "recipes":
        return p
    root = recipes_dir()
    if root is not None and (root.joinpath(*p.parts[1:])).is_file():
        return root.joinpath(*p.parts[1:])
    return p
