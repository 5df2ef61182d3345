"""The ``dynamics`` analysis (arXiv:2302.03015): the speed at which one gradient step of each
training objective moves the decision boundary at every verified margin point, and the
conflicting dynamics per margin bin.

The objectives are the live ones (the training callback passes the run's own, with any per-sample
cache such as distillation's teacher targets) and the training batch carries its training-set
indices, so per-sample targets belong to the samples of the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from robustlab.analysis._util import model_device
from robustlab.analysis.base import (
    Analysis,
    AnalysisInputs,
    AnalysisResult,
    Figure,
    register_analysis,
)
from robustlab.analysis.dynamics import boundary_speed, conflicting_dynamics, objective_velocity
from robustlab.errors import RobustlabError

__all__ = ["Dynamics", "objective_speeds"]

_KEYS = (
    ("frac_negative_speed", "fraction of negative speeds"),
    ("frac_negative_below_eps", "fraction negative among margin < eps"),
)


def objective_speeds(
    inputs: AnalysisInputs, objective: Any, margins: dict[str, Tensor], ok: Tensor
) -> tuple[Tensor, Tensor]:
    """Closed-form (and box-aware) speeds of the verified points ``ok`` under one objective's
    velocity on ``inputs.train_batch`` (NaN elsewhere)."""
    assert inputs.train_batch is not None
    model, x, y = inputs.model, inputs.x, inputs.y
    xt, yt, it = inputs.train_batch
    velocity = objective_velocity(model, objective, xt, yt, index=it, seed=inputs.seed)
    speed = torch.full((x.shape[0],), math.nan, dtype=torch.float64)
    speed_box = speed.clone()
    if ok.numel():
        dev = model_device(model)
        okd = ok.to(x.device)
        res = boundary_speed(
            model, margins["x_hat"][ok].to(dev), y[okd].to(dev), velocity, inputs.threat,
            x=x[okd].to(dev),
        )  # fmt: skip
        speed[ok] = res["speed"].double().cpu()
        if "speed_box" in res:
            speed_box[ok] = res["speed_box"].double().cpu()
    return speed, speed_box


@register_analysis("dynamics")
class Dynamics(Analysis):
    """Boundary speeds under each objective's gradient step (needs objectives and a batch)."""

    title = "Decision-boundary dynamics"
    definition = (
        "Speed of the boundary relative to each point under one training step of an objective "
        "(parameter velocity -grad L): dR/dt = <grad_theta phi(x^), theta'> / "
        "|grad_x phi(x^)|_q at the closest boundary point x^, with phi = z_y - max_{k!=y} z_k "
        "and q the dual norm. Negative: the boundary approaches the point. Fractions of "
        "positive and negative speeds per margin bin (width eps/4). Xu et al., Exploring and "
        "Exploiting Decision Boundary Dynamics for Adversarial Robustness (arXiv:2302.03015)."
    )
    requires = ("margins",)

    def compute(self, inputs: AnalysisInputs) -> AnalysisResult:
        if not inputs.objectives or inputs.train_batch is None:
            raise RobustlabError("dynamics needs a training objective and a training batch")
        margins = inputs.cache["margins"]
        ok = (margins["verified"] & margins["correct"]).nonzero().squeeze(1)
        r = margins["margin"].double().numpy()
        arrays: dict[str, np.ndarray] = {"margin": r}
        per_objective = {}
        for label, obj in inputs.objectives.items():
            speed, speed_box = objective_speeds(inputs, obj, margins, ok)
            sp = speed.numpy()
            fin = sp[np.isfinite(sp)]
            per_objective[label] = {
                "frac_positive_speed": float(np.mean(fin > 0)) if fin.size else math.nan,
                "frac_negative_speed": float(np.mean(fin < 0)) if fin.size else math.nan,
                "median_abs_speed": float(np.median(np.abs(fin))) if fin.size else math.nan,
                **conflicting_dynamics(np.where(np.isfinite(sp), r, np.nan), sp, inputs.eps),
            }
            arrays[f"speed__{label}"] = sp
            arrays[f"speed_box__{label}"] = speed_box.numpy()
        summary = {
            "eps": inputs.eps,
            "norm": inputs.threat.name,
            "n_points": int(ok.numel()),
            "objectives": per_objective,
        }
        return AnalysisResult(summary, arrays)

    def logged(self, summary: dict[str, Any]) -> dict[str, float]:
        objectives = summary.get("objectives", {})
        out = {}
        for label, d in objectives.items():
            suffix = "" if len(objectives) == 1 else f"/{label}"
            for key, _ in _KEYS:
                if isinstance(d.get(key), (int, float)):
                    out[f"{key}{suffix}"] = float(d[key])
        return out

    def rows(self, summaries: Sequence[dict[str, Any] | None]) -> list[tuple[str, list[Any]]]:
        per_run = [(s or {}).get("objectives", {}) for s in summaries]
        rows = []
        for label in sorted({lab for d in per_run for lab in d}):
            for key, text in _KEYS:
                rows.append((f"{text} ({label})", [d.get(label, {}).get(key) for d in per_run]))
        return rows

    def headline(self, summary: dict[str, Any]) -> list[str]:
        return [
            f"neg. speed ({label}) {d['frac_negative_speed']:.2f}"
            for label, d in summary.get("objectives", {}).items()
        ]

    def figures(self, runs: Sequence[Any], plot: Any) -> list[Figure]:
        dr = [r for r in runs if "objectives" in r.analysis.get("dynamics", {})]
        if not dr:
            return []
        eps = float(dr[0].analysis["dynamics"]["eps"])
        res = {
            f"{r.name}: {label}": d
            for r in dr
            for label, d in r.analysis["dynamics"]["objectives"].items()
        }
        caption = (
            "Conflicting boundary dynamics: per margin bin (width eps/4, last bin open), the "
            "fraction of points the boundary moves away from (up) and towards (down) under one "
            "gradient step of the objective named in each panel (run: objective)."
        )
        return [Figure("dynamics", caption, plot.conflicting_dynamics_figure(res, eps), wide=True)]
