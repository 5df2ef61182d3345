"""The ``snapshot`` training callback: keeps the weights of every recorded epoch, so per-epoch
numbers (``analysis/*`` in ``metrics.jsonl``) can be recomputed and new analyses run on the
same checkpoints later (matched-accuracy comparisons of arXiv:1906.02494, the dynamics of
arXiv:2302.03015).

In a recipe::

    callbacks:
      - name: snapshot
        every: 1

Each record writes ``RUN/checkpoints/epochs/e<epoch>.pt`` (atomically) holding ``model`` (the
delivered weights: the EMA when EMA is on, the ones the ``analysis`` callback analyses) and
``live`` (the trained weights themselves, which take the optimizer steps: the weights for a
parameter velocity), with ``epoch`` and ``step``. :func:`load_snapshot` rebuilds either.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from robustlab.errors import RobustlabError
from robustlab.train.callbacks import EpochContext, register_callback
from robustlab.train.checkpoint import (
    build_model,
    load_checkpoint,
    read_run_config,
    save_checkpoint,
)
from robustlab.train.rundir import RunDir

__all__ = ["SnapshotCallback", "snapshot_path", "list_snapshots", "load_snapshot"]


def snapshot_path(run_dir: str | Path, epoch: int) -> Path:
    """Where the snapshot of ``epoch`` (counted from 0) lives."""
    return RunDir(run_dir).snapshot(epoch)


def list_snapshots(run_dir: str | Path) -> list[int]:
    """The epochs with a snapshot, ascending."""
    folder = RunDir(run_dir).snapshots
    return sorted(int(p.stem[1:]) for p in folder.glob("e*.pt")) if folder.is_dir() else []


def load_snapshot(run_dir: str | Path, epoch: int, which: str = "model") -> nn.Module:
    """The model of ``epoch``'s snapshot in eval mode: ``which`` is ``model`` (delivered) or
    ``live`` (the trained weights)."""
    if which not in ("model", "live"):
        raise RobustlabError(f"which={which!r}: choose model (delivered) or live")
    path = snapshot_path(run_dir, epoch)
    if not path.is_file():
        have = list_snapshots(run_dir)
        raise RobustlabError(f"no snapshot of epoch {epoch} in {run_dir} (epochs: {have})")
    model = build_model(read_run_config(run_dir))
    model.load_state_dict(load_checkpoint(path)[which])
    return model.eval()


@register_callback("snapshot")
class SnapshotCallback:
    """Writes the delivered and the live weights of each recorded epoch (module docstring)."""

    def on_epoch_end(self, ctx: EpochContext) -> None:
        save_checkpoint(
            snapshot_path(ctx.run_dir, ctx.epoch),
            {
                "model": ctx.model.state_dict(),
                "live": ctx.raw_model.state_dict(),
                "epoch": ctx.epoch,
                "step": ctx.step,
            },
        )
