"""The numbers the `metric` paper's claims and figures are built from, computed once per run and
cached in
the run directory: per-epoch per-image accuracy, cross-class KL terms and input Fisher norms
(raw and at unit logit scale) from the ``snapshot`` checkpoints, and the per-epoch records the
``analysis`` callback logged (``metrics.jsonl``).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from robustlab.io import atomic_write_bytes

__all__ = ["epoch_arrays", "logged_epochs", "claims_images"]

_FIELDS = ("correct", "kl", "fisher", "kl_unit", "fisher_unit", "scale", "epoch")


def claims_images(dataset: str, n: int, data_dir: str | None = None) -> tuple[Tensor, Tensor]:
    """The first ``n`` test images and labels (the protocol's first images)."""
    from robustlab.data import load_split

    split = load_split(dataset, "test", data_dir)
    n = min(n, len(split))
    return split.images[:n].float().div(255.0), split.labels[:n].long()


def _one_checkpoint(model: torch.nn.Module, x: Tensor, y: Tensor) -> dict[str, Any]:
    from robustlab.analysis.fisher import fisher_summary
    from robustlab.analysis.scale import (
        LogitScaled,
        cross_class_kl_per_sample,
        logit_scale,
        logits_of,
    )

    z = logits_of(model, x)
    scale = logit_scale(z)
    unit = LogitScaled(model, scale)
    return {
        "correct": (z.argmax(1) == y).numpy().astype(np.float64),
        "kl": cross_class_kl_per_sample(z, y).numpy(),
        "fisher": fisher_summary(model, x)["fisher_fro"],
        "kl_unit": cross_class_kl_per_sample(z / scale, y).numpy(),
        "fisher_unit": fisher_summary(unit, x)["fisher_fro"],
        "scale": scale,
    }


def epoch_arrays(
    run_dir: Path, x: Tensor, y: Tensor, epochs: list[int] | None = None
) -> dict[str, np.ndarray]:
    """Per-image numbers of each snapshot epoch (all by default) of a run, shape (E, N) (scale
    and epoch: (E,)); cached as ``RUN/analysis/metric-<n>-<epochs>.npz``."""
    from robustlab.analysis.snapshots import list_snapshots, load_snapshot

    have = list_snapshots(run_dir)
    epochs = have if epochs is None else [have[e] if e < 0 else e for e in epochs]
    tag = "all" if epochs == have else "-".join(map(str, epochs))
    cache = Path(run_dir) / "analysis" / f"metric-{len(x)}-{tag}.npz"
    if cache.is_file():
        with np.load(cache) as f:
            return {k: f[k] for k in f.files}
    rows = [_one_checkpoint(load_snapshot(run_dir, e, "model"), x, y) for e in epochs]
    out = {k: np.stack([np.asarray(r[k]) for r in rows]) for k in _FIELDS if k != "epoch"}
    out["epoch"] = np.asarray(epochs)
    buf = io.BytesIO()
    np.savez_compressed(buf, **out)
    atomic_write_bytes(cache, buf.getvalue())
    return out


def logged_epochs(run_dir: Path) -> list[dict[str, Any]]:
    """The epoch records of ``metrics.jsonl`` (with the callback's ``analysis/*`` numbers)."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r.get("kind") == "epoch"]
