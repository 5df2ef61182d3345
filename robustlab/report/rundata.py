"""What the report reads from a run directory: :class:`RunData` and :func:`load_run`.

One job: load a run's configuration, summaries, evaluations, analysis summaries and arrays and
per-epoch records (all paths from :class:`~robustlab.train.rundir.RunDir`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from robustlab.analysis.run import read_analysis
from robustlab.errors import RobustlabError
from robustlab.train.rundir import RunDir

__all__ = ["RunData", "load_run"]


@dataclass
class RunData:
    """Everything the report shows about one run directory."""

    path: Path
    name: str
    config: dict[str, Any]
    summary: dict[str, Any]
    evals: dict[str, Any]
    analysis: dict[str, Any]
    arrays: dict[str, dict[str, np.ndarray]]
    epochs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def dataset(self) -> str:
        return str(
            self.analysis.get("meta", {}).get("dataset")
            or self.config.get("data", {}).get("dataset")
            or "?"
        )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise RobustlabError(f"cannot read {path}: {e}") from None


def load_run(run_dir: str | Path, name: str | None = None) -> RunData:
    """Read a run directory; a folder without ``config.yaml`` is a clear error."""
    rdir = RunDir(run_dir)
    run = rdir.root
    if not run.is_dir():
        raise RobustlabError(f"run directory not found: {run}")
    cfg_path = rdir.config
    if not cfg_path.is_file():
        raise RobustlabError(f"{run} is not a run directory (no config.yaml)")
    try:
        config = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise RobustlabError(f"cannot read {cfg_path}: {e}") from None
    summary = _read_json(rdir.summary) if rdir.summary.is_file() else {}
    evals: dict[str, Any] = {}
    if rdir.eval.root.is_dir():
        for p in sorted(rdir.eval.root.glob("*.json")):
            evals[p.stem] = _read_json(p)
        for p in sorted(rdir.eval.root.glob("*/summary.json")):  # eval/<name>/: one per eval
            evals[p.parent.name] = _read_json(p)
    analysis, arrays = read_analysis(run)
    epochs: list[dict[str, Any]] = []
    metrics = rdir.metrics
    if metrics.is_file():
        for line in metrics.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            if isinstance(rec, dict) and rec.get("kind", "epoch") == "epoch":
                epochs.append(rec)
    return RunData(run, name or run.name, config, summary, evals, analysis, arrays, epochs)
