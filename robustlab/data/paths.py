"""Where data lives: the data root (argument, ``ROBUSTLAB_DATA``, or the per-user cache) and the
per-user cache directory."""

from __future__ import annotations

import os
from pathlib import Path

from robustlab.errors import DataError

__all__ = ["user_cache_dir", "default_data_root", "resolve_data_root"]

ENV_DATA = "ROBUSTLAB_DATA"


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/robustlab`` (default ``~/.cache/robustlab``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "robustlab"


def default_data_root() -> Path:
    """The data root used when none is given: ``$ROBUSTLAB_DATA``, else the per-user cache."""
    env = os.environ.get(ENV_DATA)
    if env:
        return Path(env).expanduser()
    return user_cache_dir() / "data"


def resolve_data_root(root: str | os.PathLike[str] | None = None, *, create: bool = False) -> Path:
    """The data root to read from (or, with ``create=True``, to download into).

    Order: ``root`` if given, else ``$ROBUSTLAB_DATA``, else ``~/.cache/robustlab/data``
    (honouring ``XDG_CACHE_HOME``). An explicitly given root (argument or environment) that
    does not exist is an error; the per-user cache is created on demand when ``create``.
    """
    if root is not None and str(root) != "":
        path, source = Path(root).expanduser(), "data directory"
    elif os.environ.get(ENV_DATA):
        path, source = default_data_root(), f"data directory from ${ENV_DATA}"
    else:
        path, source = default_data_root(), None
    if path.exists() and not path.is_dir():
        raise DataError(f"{source or 'data directory'} {path} is not a directory")
    if not path.exists():
        if create:
            path.mkdir(parents=True, exist_ok=True)
        elif source is not None:
            raise DataError(f"{source} {path} does not exist")
    return path
