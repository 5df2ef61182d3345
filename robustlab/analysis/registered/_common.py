"""Helpers the built-in analyses' figures share: finite values, same-sample checks, the
training eps of a run, and a statistic with its bootstrap interval."""

from __future__ import annotations

from typing import Any

import numpy as np

from robustlab.analysis.logits import summarize

__all__ = ["finite", "same_samples", "training_eps", "stats"]


def finite(v: np.ndarray) -> np.ndarray:
    """The finite entries of ``v`` as float64."""
    v = np.asarray(v, dtype=np.float64)
    return v[np.isfinite(v)]


def stats(v: np.ndarray, seed: int) -> dict[str, float]:
    """Mean (and spread) of the finite values with a seeded 95% bootstrap interval."""
    return summarize({"v": v[np.isfinite(v)]}, n_boot=500, seed=seed)["v"]


def same_samples(a: Any, b: Any) -> bool:
    """True when two runs were analysed on the same test samples."""
    sa, sb = a.arrays.get("samples"), b.arrays.get("samples")
    return (
        sa is not None
        and sb is not None
        and sa["index"].shape == sb["index"].shape
        and bool((sa["index"] == sb["index"]).all())
    )


def training_eps(run: Any) -> float | None:
    """The eps a run was trained at (0 without one); None when it cannot be read."""
    obj = run.config.get("objective", {}) or {}
    eps = (obj.get("params", {}) or {}).get("eps", 0.0)
    try:
        from robustlab.attacks.threat import parse_eps

        return 0.0 if eps in (0, 0.0, None) else parse_eps(eps)
    except Exception:  # noqa: BLE001 (a hand-edited config: leave this run out of the plot)
        return None
