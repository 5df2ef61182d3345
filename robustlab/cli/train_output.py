"""What ``robustlab train`` prints around a run: the resolved validation attack before it and a
short summary after it (accuracies, time, where the files are)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["describe_validation", "training_summary", "percent"]


def percent(value: Any) -> str:
    """An accuracy as the CLI and the report print it: a percentage with two decimals."""
    return "-" if value is None else f"{100 * float(value):.2f}%"


def describe_validation(cfg: Any) -> str:
    """One line: the resolved robust-validation attack (eps and step size after overrides)."""
    from robustlab.attacks.pgd import default_step_size
    from robustlab.attacks.threat import make_threat

    atk = cfg.validation.attack
    if atk is None or not cfg.validation.every:
        return "validation: clean accuracy only"
    step = atk.step_size
    if step is None:
        step = default_step_size(make_threat(atk.norm, atk.eps), atk.steps)
    size = f"{step:.4g}"
    return (
        f"validation attack: {atk.name} {atk.norm} eps {atk.eps:.4g}, {atk.steps} steps of "
        f"{size} ({atk.loss} loss)"
    )


def training_summary(run_dir: str | Path) -> str:
    """The end of a run in a few lines: final and best validation accuracy, time, files."""
    from robustlab.train.rundir import RunDir

    run = RunDir(run_dir)
    try:
        s = json.loads(run.summary.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return f"robustlab: run complete: {run}"
    final = s.get("final") or {}
    best = s.get("best") or {}
    lines = [f"robustlab: run complete: {run}"]
    if "val_clean_acc" in final:
        robust = final.get("val_robust_acc")
        extra = f", robust {percent(robust)}" if robust is not None else ""
        lines.append(f"  final validation: clean {percent(final['val_clean_acc'])}{extra}")
    if best:
        lines.append(
            f"  best {best.get('metric', 'validation')}: {percent(best.get('value'))} "
            f"(epoch {int(best.get('epoch', 0)) + 1} of {s.get('epochs')})"
        )
    if s.get("time_s") is not None:
        lines.append(f"  time: {float(s['time_s']):.1f} s on {s.get('device')}")
    ck = s.get("checkpoints") or {}
    files = ", ".join(str(run.root / v) for v in ck.values())
    lines.append(f"  files: {files or run}; metrics in {run.metrics}")
    return "\n".join(lines)
