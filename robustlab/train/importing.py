"""Importing third-party weights into a run directory, so every run-based command takes them.

One job: ``import_weights(run_dir, model, weights, dataset, ...)`` loads a checkpoint that was
not produced by robustlab (any state-dict layout ``robustlab.models.load_checkpoint`` reads,
``remap``, ``input_norm`` ...) into a registered architecture, and writes a run directory with
the resolved ``config.yaml`` (model, dataset, input normalization), ``checkpoints/best.pt``
(robustlab's layout) and ``summary.json`` recording where the weights came from (path, SHA-256,
remapped keys, the normalization applied, the load warning if any). ``robustlab eval --run``,
``analyze`` and ``report`` then treat it like a trained run; the report shows the origin.
"""

from __future__ import annotations

import hashlib
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from robustlab.config import config_from_dict
from robustlab.errors import RobustlabError
from robustlab.io import atomic_write_text, write_json
from robustlab.train.checkpoint import save_checkpoint
from robustlab.train.rundir import RunDir

__all__ = ["import_weights", "imported_origin"]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def import_weights(
    run_dir: str | Path,
    model: str,
    weights: str | Path,
    dataset: str,
    *,
    remap: str = "none",
    input_norm: str = "auto",
    key: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    norm_layer: str | None = None,
    act: str | None = None,
    overwrite: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """Write a run directory holding ``weights`` loaded into ``model``; returns it and the
    origin record (also in ``summary.json["imported"]``).

    A directory that already holds another import of the same file and settings is reused;
    anything else there is an error unless ``overwrite``.
    """
    from robustlab.models import input_normalization, load_checkpoint
    from robustlab.models.checkpoint import NormalizationWarning
    from robustlab.train.checkpoint import build_model

    src = Path(weights)
    if not src.is_file():
        raise RobustlabError(f"--weights {src}: no such file")
    run = RunDir(run_dir)
    model_section: dict[str, Any] = {"name": model, "input_norm": input_norm, "remap": remap}
    model_section.update({"norm": norm_layer, "act": act, "kwargs": dict(model_kwargs or {})})
    cfg = config_from_dict(
        {
            "name": f"import-{model}-{src.stem}",
            "data": {"dataset": dataset},
            "model": model_section,
            "validation": {"every": 0, "attack": None},
        }
    )
    digest = _sha256(src)
    previous = imported_origin(run.root)
    if run.root.exists() and any(run.root.iterdir()) and not overwrite:
        same = previous is not None and previous.get("sha256") == digest
        if not (same and previous.get("config") == cfg.to_dict()):
            raise RobustlabError(
                f"{run.root} already holds another run; choose another --import-dir"
            )
    net = build_model(cfg)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = load_checkpoint(net, src, remap=remap, key=key)
    for w in caught:  # anything else is passed on unchanged
        if not issubclass(w.category, NormalizationWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    origin = {
        "weights": str(src.resolve()),
        "sha256": digest,
        "entry": report.entry,
        "remap": remap,
        "remapped": report.remapped,
        "model": model,
        "dataset": dataset,
        "input_normalization": input_normalization(net),
        "warning": report.warning,
        "imported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": cfg.to_dict(),
    }
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.config, cfg.to_yaml())
    save_checkpoint(
        run.checkpoint("best"),
        {"model": net.state_dict(), "epoch": 0, "step": 0, "best": None, "ema": False},
    )
    summary = {
        "name": cfg.name,
        "complete": True,
        "imported": origin,
        "model": model,
        "dataset": dataset,
        "epochs": 0,
        "checkpoints": {"best": run.relative(run.checkpoint("best"))},
    }
    write_json(run.summary, summary)
    return run.root, origin


def imported_origin(run_dir: str | Path) -> dict[str, Any] | None:
    """The origin record of an imported run (None for a trained run or no run)."""
    import json

    path = RunDir(run_dir).summary
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    origin = data.get("imported") if isinstance(data, dict) else None
    return origin if isinstance(origin, dict) else None
