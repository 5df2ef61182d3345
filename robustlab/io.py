"""Atomic file writes: every file robustlab writes appears whole or not at all."""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is fsynced and renamed onto it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; use the usual mode
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_text(
        path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    )


def append_jsonl(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append one JSON line and fsync (a crash loses at most the line being written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, default=_json_default) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` to ``path`` atomically."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


DAMAGED_ADVICE = "delete it, or restore it from a copy"


def safe_torch_load(
    path: str | os.PathLike[str], map_location: Any = "cpu", advice: str = DAMAGED_ADVICE
) -> Any:
    """``torch.load`` with ``weights_only=True``: never unpickles code.

    A file that cannot be read raises :class:`~robustlab.errors.CheckpointError` with one line
    naming the file, what is wrong (empty, truncated or not a checkpoint, or pickled objects
    that are not tensors) and ``advice``; never torch's own text, which suggests turning
    ``weights_only`` off.
    """
    from robustlab.errors import CheckpointError

    p = Path(path)
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except (KeyboardInterrupt, MemoryError):
        raise
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file not found: {p}") from None
    except Exception as e:  # torch raises many types here (RuntimeError, EOFError, KeyError...)
        raise CheckpointError(f"{p}: {_why_unreadable(p, e)}; {advice}") from None


def _why_unreadable(path: Path, e: BaseException) -> str:
    """What is wrong with a file ``torch.load`` refused, in words (not torch's message)."""
    import pickle
    import re

    try:
        size = path.stat().st_size
    except OSError:
        size = -1
    if size == 0:
        return "the file is empty (an interrupted copy or a full disk?)"
    if isinstance(e, pickle.UnpicklingError):
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        if found:
            return (
                f"refused to load: it pickles the object {found.group(1)}, not only tensors "
                "(robustlab loads with weights_only=True; save model.state_dict() instead)"
            )
    if isinstance(e, IsADirectoryError | PermissionError):
        return f"cannot be read ({e.strerror})"
    return "not a readable PyTorch checkpoint (truncated, corrupt or another kind of file)"


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def check_writable(path: str | os.PathLike[str], option: str, directory: bool = False) -> None:
    """Fail early, with one line naming ``option``, when ``path`` could not be written later.

    Probes the nearest existing folder (or ``path`` itself for a directory) by creating and
    removing a temporary file, so nothing is left behind and root's permission bypass does not
    hide a read-only file system.
    """
    from robustlab.errors import RobustlabError

    p = Path(path)
    if p.exists() and (p.is_dir() != directory):
        kind = "is not a directory" if directory else "is a directory"
        raise RobustlabError(f"{option} {p}: {kind}")
    probe_dir = p if directory else p.parent
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise RobustlabError(f"{option} {p}: {probe_dir} is a file, not a directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".write-test.", dir=probe_dir)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise RobustlabError(f"{option} {p}: cannot write there ({e.strerror})") from None
