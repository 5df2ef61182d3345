"""The content of ``RUN/summary.json``, written last: a run is complete when it exists.

One job: :func:`run_summary` collects the final numbers of a finished training run (its
configuration in brief, timing, the last epoch record, the best epoch and the checkpoint paths
relative to the run directory).
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_summary"]


def run_summary(t: Any, last: dict[str, Any], seconds: float, images: int) -> dict[str, Any]:
    """The summary of the finished run held by the trainer ``t``."""
    cfg, rd = t.cfg, t.rundir
    return {
        "name": cfg.name,
        "complete": True,
        "epochs": cfg.train.epochs,
        "steps": t.step,
        "world_size": t.dist.world_size,
        "device": str(t.device),
        "objective": {"name": cfg.objective.name, **cfg.objective.params},
        "model": cfg.model.name,
        "dataset": cfg.data.dataset,
        "n_train": len(t.data.train),
        "n_val": len(t.data.val) if t.data.val is not None else 0,
        "time_s": seconds,
        "images_per_s": images / seconds if seconds > 0 else None,
        "final": {k: v for k, v in last.items() if k != "kind"},
        "best": t.best,
        "checkpoints": {
            "best": rd.relative(rd.checkpoint("best")),
            "last": rd.relative(rd.checkpoint("last")),
            "best_weights": rd.relative(rd.weights("best")),
        },
    }
