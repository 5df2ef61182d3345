"""The run directory: checked and created before training, complete once ``summary.json`` exists.

A run directory holds ``config.yaml``, ``metrics.jsonl``, ``checkpoints/`` and, written last,
``summary.json``. :func:`prepare_run_dir` fails early with a clear message when the
directory cannot be written or already holds another run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from robustlab.errors import RobustlabError
from robustlab.io import atomic_write_text

__all__ = [
    "RunDirError",
    "default_run_dir",
    "prepare_run_dir",
    "is_complete",
    "remove_if_unused",
    "truncate_metrics",
    "SUMMARY",
    "METRICS",
    "CONFIG",
]

SUMMARY, METRICS, CONFIG = "summary.json", "metrics.jsonl", "config.yaml"


class RunDirError(RobustlabError):
    """The run directory cannot be used (unwritable, or it holds another run)."""


def default_run_dir(name: str) -> Path:
    """``runs/<name>`` under the current directory."""
    return Path("runs") / name


def is_complete(run_dir: str | Path) -> bool:
    """A run is complete when its ``summary.json`` exists."""
    return (Path(run_dir) / SUMMARY).is_file()


def prepare_run_dir(run_dir: str | Path, resume: bool = False) -> tuple[Path, bool]:
    """Check that ``run_dir`` can hold this run and is writable; create it.

    Returns ``(path, created)``; ``created`` tells whether this call made the directory (so a
    failure before training can remove it again). Without ``resume`` the directory must be
    new or empty; with ``resume`` it may hold a run to continue.
    """
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"run directory {path} exists and is not a directory")
    if path.is_dir() and not resume:
        used = [p.name for p in path.iterdir() if not p.name.startswith(".")]
        if used:
            raise RunDirError(
                f"run directory {path} already holds files ({', '.join(sorted(used)[:4])}); "
                "pass --resume to continue that run or choose another --run-dir"
            )
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        atomic_write_text(probe, "ok\n")
        probe.unlink()
    except OSError as e:
        if created:
            _rmdir_quiet(path)
        reason = e.strerror or str(e)
        raise RunDirError(f"cannot write to run directory {path}: {reason}") from None
    return path, created


def _rmdir_quiet(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def remove_if_unused(path: Path, created: bool) -> None:
    """After a failure before training started: remove the directory if this run made it and
    it holds nothing but this run's config, so nothing is left behind."""
    if not created or not path.is_dir():
        return
    names = {p.name for p in path.iterdir()}
    has_ckpt = any((path / "checkpoints").glob("*.pt"))
    if names <= {CONFIG, METRICS, "checkpoints"} and not has_ckpt:
        shutil.rmtree(path, ignore_errors=True)


def truncate_metrics(run_dir: Path, step: int) -> None:
    """On resume: drop ``metrics.jsonl`` records written after the checkpoint at ``step``, so
    a resumed run's log matches an uninterrupted one."""
    path = run_dir / METRICS
    if not path.is_file():
        return
    keep: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec: Any = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by the crash
        if isinstance(rec, dict) and int(rec.get("step", 0)) <= step:
            keep.append(line)
    atomic_write_text(path, "".join(x + "\n" for x in keep))
