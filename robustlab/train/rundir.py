"""The run directory: every path of a run (:class:`RunDir`), its checks and its creation.

One job: the layout of ``RUN/`` (``config.yaml``, ``metrics.jsonl``, ``checkpoints/``,
``eval/``, ``analysis/``, ``report.html`` and, written last, ``summary.json``). No other module
spells a run's file names: they ask a :class:`RunDir`. :func:`prepare_run_dir` fails early with
a clear message when the directory cannot be written or already holds another run.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustlab.errors import RobustlabError
from robustlab.io import atomic_write_text

__all__ = [
    "RunDir",
    "EvalDir",
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
CHECKPOINTS, EVAL, ANALYSIS = "checkpoints", "eval", "analysis"
CHECKPOINT_NAMES = ("best", "last")


@dataclass(frozen=True)
class EvalDir:
    """The outputs of one ``robustlab eval``: ``RUN/eval/`` or a folder given by --run-dir."""

    root: Path

    @property
    def summary(self) -> Path:
        """``summary.json``: the evaluation's numbers."""
        return Path(self.root) / SUMMARY

    @property
    def samples(self) -> Path:
        """``samples.jsonl``: one record per evaluated sample."""
        return Path(self.root) / "samples.jsonl"


@dataclass(frozen=True)
class RunDir:
    """Every path of one run directory (a value: building one touches no file).

    ``RunDir("runs/x").metrics`` is ``runs/x/metrics.jsonl``; ``os.fspath(run)`` and
    ``str(run)`` give the root, so a ``RunDir`` goes wherever a path does.
    """

    root: Path

    def __init__(self, root: str | os.PathLike[str] | RunDir) -> None:
        object.__setattr__(self, "root", Path(root.root if isinstance(root, RunDir) else root))

    def __fspath__(self) -> str:
        return os.fspath(self.root)

    def __str__(self) -> str:
        return str(self.root)

    def relative(self, path: Path) -> str:
        """``path`` relative to the run directory, with ``/`` (as stored in JSON files)."""
        return Path(path).relative_to(self.root).as_posix()

    # ----------------------------------------------------------------- training
    @property
    def config(self) -> Path:
        """``config.yaml``: the resolved configuration."""
        return self.root / CONFIG

    @property
    def metrics(self) -> Path:
        """``metrics.jsonl``: one JSON record per logged step and per epoch."""
        return self.root / METRICS

    @property
    def summary(self) -> Path:
        """``summary.json``: final metrics, written last (a run is complete when it exists)."""
        return self.root / SUMMARY

    @property
    def checkpoints(self) -> Path:
        """``checkpoints/``."""
        return self.root / CHECKPOINTS

    def checkpoint(self, which: str = "last") -> Path:
        """``checkpoints/{best,last}.pt``."""
        if which not in CHECKPOINT_NAMES:
            raise RobustlabError(
                f"checkpoint {which!r}: choose one of {', '.join(CHECKPOINT_NAMES)}"
            )
        return self.checkpoints / f"{which}.pt"

    @property
    def snapshots(self) -> Path:
        """``checkpoints/epochs/``: the ``snapshot`` callback's per-epoch weights."""
        return self.checkpoints / "epochs"

    def snapshot(self, epoch: int) -> Path:
        """``checkpoints/epochs/eNNNN.pt``: the snapshot of ``epoch`` (counted from 0)."""
        return self.snapshots / f"e{int(epoch):04d}.pt"

    def weights(self, name: str) -> Path:
        """``checkpoints/<name>.safetensors``: exported weights alone (``best``, ``ema``)."""
        return self.checkpoints / f"{name}.safetensors"

    @property
    def tensorboard(self) -> Path:
        """``tensorboard/`` (event files when ``train.tensorboard`` is on)."""
        return self.root / "tensorboard"

    def is_complete(self) -> bool:
        """A run is complete when its ``summary.json`` exists."""
        return self.summary.is_file()

    # ----------------------------------------------------------------- evaluation
    @property
    def eval(self) -> EvalDir:
        """``eval/``: ``robustlab eval --run`` outputs."""
        return EvalDir(self.root / EVAL)

    def evaluation(self, name: str) -> EvalDir:
        """``eval/<name>/``: one ``robustlab eval --run``, named by what it measured (attack,
        norm, eps, n, seed), so that evaluations never replace each other."""
        return EvalDir(self.root / EVAL / name)

    @property
    def eval_index(self) -> Path:
        """``eval/index.json``: every evaluation of the run, with its headline numbers."""
        return self.root / EVAL / "index.json"

    # ----------------------------------------------------------------- analysis
    @property
    def analysis_dir(self) -> Path:
        """``analysis/``: ``robustlab analyze`` outputs and per-epoch callback arrays."""
        return self.root / ANALYSIS

    @property
    def analysis_summary(self) -> Path:
        """``analysis/summary.json``: every analysis's summary numbers."""
        return self.analysis_dir / SUMMARY

    @property
    def analysis_samples(self) -> Path:
        """``analysis/samples.npz``: which test images were analysed."""
        return self.analysis_dir / "samples.npz"

    def analysis_arrays(self, name: str) -> Path:
        """``analysis/<name>.npz``: one analysis's per-sample arrays."""
        return self.analysis_dir / f"{name}.npz"

    def analysis_figure(self, name: str) -> Path:
        """``analysis/<name>.png``."""
        return self.analysis_dir / f"{name}.png"

    def epoch_arrays(self, name: str, epoch: int) -> Path:
        """``analysis/epochs/<name>_eNNNN.npz``: arrays logged by the training callback."""
        return self.analysis_dir / "epochs" / f"{name}_e{epoch:04d}.npz"

    # ----------------------------------------------------------------- report
    @property
    def report(self) -> Path:
        """``report.html``: the default place of this run's own report."""
        return self.root / "report.html"


class RunDirError(RobustlabError):
    """The run directory cannot be used (unwritable, or it holds another run)."""


def default_run_dir(name: str) -> Path:
    """``runs/<name>`` under the current directory."""
    return Path("runs") / name


def is_complete(run_dir: str | Path) -> bool:
    """A run is complete when its ``summary.json`` exists."""
    return RunDir(run_dir).is_complete()


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
    has_ckpt = any(RunDir(path).checkpoints.glob("*.pt"))
    if names <= {CONFIG, METRICS, CHECKPOINTS} and not has_ckpt:
        shutil.rmtree(path, ignore_errors=True)


def truncate_metrics(run_dir: str | Path | RunDir, step: int) -> None:
    """On resume: drop ``metrics.jsonl`` records written after the checkpoint at ``step``, so
    a resumed run's log matches an uninterrupted one."""
    path = RunDir(run_dir).metrics
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
