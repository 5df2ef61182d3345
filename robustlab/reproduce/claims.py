"""Typed claims and their verdicts: per-seed values, mean and sd, a bootstrap interval over
test images, and ``holds`` / ``mixed`` / ``fails``.

A claim is one or more *comparisons*. A comparison has, per seed, a statistic computed from
per-sample arrays over the test images (``stat(idx) -> float``, where ``idx`` selects test
images, possibly with repeats). Its value per seed is ``stat(all images)``; ``expect`` says
which sign the claim predicts (``+1``: positive). The bootstrap resamples the *same* test
images in every seed (the seeds share the test set) and recomputes the seed mean.

Verdict of one comparison (``expect`` orients the difference so that positive = as claimed):

- ``holds``: every seed's value is positive and the bootstrap interval of the seed mean
  lies entirely above zero;
- ``fails``: the seed mean is zero or negative (the claimed direction is not seen on
  average);
- ``mixed``: anything else (positive on average, but some seed disagrees or the interval
  includes zero).

A claim with several comparisons is their conjunction: ``holds`` when every comparison
holds, ``fails`` when any fails, else ``mixed``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robustlab.errors import RobustlabError

__all__ = [
    "VERDICTS",
    "SOURCES",
    "Comparison",
    "Claim",
    "comparison",
    "verdict_of",
    "combine_verdicts",
    "mean_diff",
    "mean_of",
    "CLAIMS_SCHEMA_VERSION",
]

VERDICTS = ("holds", "mixed", "fails")
SOURCES = ("paper", "recon")
CLAIMS_SCHEMA_VERSION = 1

Stat = Callable[[np.ndarray], float]


def mean_diff(a: np.ndarray, b: np.ndarray | float) -> Stat:
    """``stat(idx) = mean(a[idx]) - mean(b[idx])`` (``b`` may be a constant)."""
    a = np.asarray(a, dtype=np.float64)
    if np.isscalar(b):
        c = float(b)
        return lambda idx: float(a[idx].mean() - c)
    bb = np.asarray(b, dtype=np.float64)
    if bb.shape != a.shape:
        raise RobustlabError(f"paired arrays differ in shape: {a.shape} vs {bb.shape}")
    return lambda idx: float(a[idx].mean() - bb[idx].mean())


def mean_of(a: np.ndarray) -> Stat:
    """``stat(idx) = mean(a[idx])``."""
    a = np.asarray(a, dtype=np.float64)
    return lambda idx: float(a[idx].mean())


def verdict_of(per_seed: Sequence[float], interval: tuple[float, float], expect: int) -> str:
    """The verdict of one comparison (see the module docstring); ``expect`` is +1 or -1."""
    if expect not in (1, -1):
        raise RobustlabError(f"expect must be +1 or -1, got {expect!r}")
    vals = [expect * float(v) for v in per_seed]
    if not vals or any(math.isnan(v) for v in vals):
        return "fails"
    lo, hi = sorted((expect * interval[0], expect * interval[1]))
    if float(np.mean(vals)) <= 0:
        return "fails"
    if all(v > 0 for v in vals) and lo > 0:
        return "holds"
    return "mixed"


def combine_verdicts(verdicts: Sequence[str]) -> str:
    """Conjunction: ``holds`` if all hold, ``fails`` if any fails, else ``mixed``."""
    if not verdicts:
        raise RobustlabError("a claim needs at least one comparison")
    if any(v == "fails" for v in verdicts):
        return "fails"
    return "holds" if all(v == "holds" for v in verdicts) else "mixed"


@dataclass
class Comparison:
    """One measured difference with its per-seed values, interval and verdict."""

    quantity: str  # what is measured, e.g. "mean max logit: standard - AT (eps)"
    expect: int  # +1: the claim predicts a positive value; -1: negative
    per_seed: list[float]
    mean: float
    sd: float
    interval: tuple[float, float]
    verdict: str
    details: dict[str, Any] = field(default_factory=dict)  # the compared values per seed

    def to_dict(self) -> dict[str, Any]:
        return {
            "quantity": self.quantity,
            "expect": "positive" if self.expect > 0 else "negative",
            "per_seed": [_num(v) for v in self.per_seed],
            "mean": _num(self.mean),
            "sd": _num(self.sd),
            "interval": [_num(self.interval[0]), _num(self.interval[1])],
            "verdict": self.verdict,
            "details": self.details,
        }


def _num(v: float) -> float | None:
    v = float(v)
    return None if math.isnan(v) else round(v, 6)


def comparison(
    quantity: str,
    stats: Sequence[Stat],
    n: int,
    expect: int = 1,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    details: dict[str, Any] | None = None,
) -> Comparison:
    """Evaluate one comparison: ``stats`` holds one statistic per seed over ``n`` test images."""
    if not stats:
        raise RobustlabError(f"{quantity}: no seeds to compare")
    if n < 1:
        raise RobustlabError(f"{quantity}: no test images")
    full = np.arange(n)
    per_seed = [float(s(full)) for s in stats]
    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, n, size=n)
        boots[b] = np.mean([s(idx) for s in stats])
    alpha = (1 - level) / 2
    lo, hi = (float(q) for q in np.quantile(boots, [alpha, 1 - alpha]))
    mean = float(np.mean(per_seed))
    sd = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0
    return Comparison(
        quantity=quantity,
        expect=expect,
        per_seed=per_seed,
        mean=mean,
        sd=sd,
        interval=(lo, hi),
        verdict=verdict_of(per_seed, (lo, hi), expect),
        details=details or {},
    )


@dataclass
class Claim:
    """A paper's claim as checked here: id (A1..D4, as on the documentation's "Papers" page),
    statement, source tag, comparisons (the measured quantities) and the combined verdict."""

    id: str
    paper: str
    statement: str
    source: str  # "paper" or "recon"
    comparisons: list[Comparison]
    seeds: list[int]
    n_test: int
    notes: str = ""
    tables: dict[str, Any] = field(default_factory=dict)  # extra numbers the claim reports

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise RobustlabError(f"claim {self.id}: source must be one of {SOURCES}")

    @property
    def verdict(self) -> str:
        return combine_verdicts([c.verdict for c in self.comparisons])

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "paper": self.paper,
            "statement": self.statement,
            "source": self.source,
            "verdict": self.verdict,
            "seeds": list(self.seeds),
            "n_test": self.n_test,
            "comparisons": [c.to_dict() for c in self.comparisons],
            "notes": self.notes,
            "tables": self.tables,
        }
