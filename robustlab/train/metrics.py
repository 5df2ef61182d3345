"""Logged training values: device-side accumulation, one sync per log, and their sinks.

One job: running (sum, count) pairs of the loss and the objective's logs without a device
sync per step (:func:`accumulate`, :func:`merge`), their means over steps and ranks
(:func:`reduce_means`, one all-reduce), the divergence check, and the optional TensorBoard
writer.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from robustlab.errors import RobustlabError
from robustlab.train.distributed import all_reduce_sum

__all__ = [
    "accumulate",
    "merge",
    "reduce_means",
    "check_finite",
    "gather_objects",
    "tensorboard_writer",
    "epoch_line",
]


def reduce_means(sums: dict[str, Tensor]) -> dict[str, float]:
    """Means over steps (and ranks) of accumulated values: one device sync."""
    if not sums:
        return {}
    keys = sorted(sums)
    flat = torch.stack([sums[k].to(torch.float64).reshape(2) for k in keys])
    all_reduce_sum(flat)
    vals = flat.tolist()
    return {k: (s / n if n else float("nan")) for k, (s, n) in zip(keys, vals, strict=True)}


def accumulate(window: dict[str, Tensor], loss: Tensor, logs: dict[str, Any]) -> None:
    """Add this step's values to running (sum, count) pairs without a device sync."""
    items = [("loss", loss.detach())] + list(logs.items())
    for k, v in items:
        v = v.detach().float().reshape(()) if isinstance(v, Tensor) else torch.tensor(float(v))
        pair = torch.stack([v.to(loss.device), torch.ones((), device=loss.device)])
        if k in window:
            window[k] += pair
        else:
            window[k] = pair


def merge(into: dict[str, Tensor], window: dict[str, Tensor]) -> None:
    for k, v in window.items():
        into[k] = into[k] + v if k in into else v.clone()


def check_finite(rec: dict[str, float], step: int) -> None:
    loss = rec.get("loss")
    if loss is not None and not math.isfinite(loss):
        raise RobustlabError(
            f"training diverged: the loss is {loss} at step {step}; lower optim.lr, set "
            "optim.clip_grad_norm or check the objective's hyperparameters"
        )


def gather_objects(obj: Any) -> list[Any]:
    import torch.distributed as tdist

    if tdist.is_initialized() and tdist.get_world_size() > 1:
        out: list[Any] = [None] * tdist.get_world_size()
        tdist.all_gather_object(out, obj)
        return out
    return [obj]


def tensorboard_writer(path: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard not installed
        return None
    try:
        return SummaryWriter(str(path))
    except Exception as e:  # pragma: no cover - e.g. a broken tensorboard install
        warnings.warn(f"TensorBoard disabled: {e}", stacklevel=2)
        return None


def epoch_line(rec: dict[str, Any], epochs: int) -> str:
    """One line per epoch where no progress bar is drawn (output to a file or a pipe). Epochs
    count from 1 as in the progress bars; accuracies print as percentages, as in eval."""
    parts = [f"epoch {int(rec['epoch']) + 1}/{epochs}", f"step {rec['step']}"]
    if "train_loss" in rec:
        parts.append(f"loss {rec['train_loss']:.4g}")
    for key, label in (("val_clean_acc", "val clean"), ("val_robust_acc", "val robust")):
        if rec.get(key) is not None:
            parts.append(f"{label} {100 * float(rec[key]):.2f}%")
    if rec.get("time_s") is not None:
        parts.append(f"{float(rec['time_s']):.1f}s")
    return "robustlab: " + ", ".join(parts)
