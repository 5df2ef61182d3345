"""Logit statistics (arXiv:2108.12001): per-sample max logit, gaps, confidence, entropy, their
true-class versions, bootstrap summaries, and the confidence disagreement of two models.

Everything returns numpy arrays and plain numbers; figures are drawn in ``robustlab.report``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from robustlab.analysis._util import batches, check_batch, eval_mode, model_device, to_numpy
from robustlab.errors import RobustlabError

__all__ = [
    "LOGIT_STATS",
    "logits_of",
    "logit_statistics_from_logits",
    "logit_statistics",
    "bootstrap_ci",
    "summarize",
    "rankdata",
    "percentile_ranks",
    "spearman",
    "confidence_disagreement",
]

#: Names of the per-sample statistics, in the order they are reported.
LOGIT_STATS = (
    "max_logit",  # max_k z_k
    "gap",  # z_(1) - z_(2): top-1 minus top-2
    "gap_to_mean",  # z_(1) - mean_k z_k  [reconstruction]
    "confidence",  # max_k p_k
    "entropy",  # H(p) in nats
    "true_logit",  # z_y
    "true_gap",  # z_y - max_{k != y} z_k (negative when misclassified)
    "true_prob",  # p_y
    "correct",  # 1 if argmax z == y
)


@torch.no_grad()
def logits_of(model: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    """Eval-mode logits of ``x`` computed in batches, on CPU, shape (N, K)."""
    check_batch(x)
    dev = model_device(model)
    out = []
    with eval_mode(model):
        for s in batches(x.shape[0], batch_size):
            out.append(model(x[s].to(dev)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


def logit_statistics_from_logits(logits: Tensor, y: Tensor) -> dict[str, np.ndarray]:
    """The per-sample statistics of :data:`LOGIT_STATS` from a (N, K) logit matrix."""
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise RobustlabError(
            f"logits must have shape (N, K) with K >= 2, got {tuple(logits.shape)}"
        )
    z = logits.detach().double().cpu()
    y = y.detach().cpu().long()
    if y.shape[0] != z.shape[0]:
        raise RobustlabError(f"{z.shape[0]} logit rows but {y.shape[0]} labels")
    top2 = z.topk(2, dim=1).values
    logp = torch.log_softmax(z, dim=1)
    p = logp.exp()
    z_y = z.gather(1, y[:, None]).squeeze(1)
    others = z.scatter(1, y[:, None], float("-inf"))
    stats = {
        "max_logit": top2[:, 0],
        "gap": top2[:, 0] - top2[:, 1],
        "gap_to_mean": top2[:, 0] - z.mean(1),
        "confidence": p.amax(1),
        "entropy": -(p * logp).sum(1),
        "true_logit": z_y,
        "true_gap": z_y - others.amax(1),
        "true_prob": p.gather(1, y[:, None]).squeeze(1),
        "correct": (z.argmax(1) == y).double(),
    }
    return {k: to_numpy(v) for k, v in stats.items()}


def logit_statistics(
    model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 512
) -> dict[str, np.ndarray]:
    """Per-sample logit statistics of ``model`` on ``(x, y)`` in eval mode.

    Returns numpy arrays of shape (N,) named as in :data:`LOGIT_STATS`.
    """
    check_batch(x, y)
    return logit_statistics_from_logits(logits_of(model, x, batch_size), y)


def bootstrap_ci(
    values: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``values`` (seeded)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return (float("nan"), float("nan"))
    if not 0 < level < 1:
        raise RobustlabError(f"confidence level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, 2_000_000 // max(1, v.size))  # bound memory: chunk * N indices at a time
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, v.size, size=(stop - start, v.size))
        means[start:stop] = v[idx].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return (float(lo), float(hi))


def summarize(
    stats: dict[str, np.ndarray], n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Mean, median, std and a bootstrap CI of the mean for every per-sample statistic."""
    out: dict[str, dict[str, float]] = {}
    for name, v in stats.items():
        v = np.asarray(v, dtype=np.float64)
        lo, hi = bootstrap_ci(v, n_boot=n_boot, level=level, seed=seed)
        out[name] = {
            "mean": float(v.mean()) if v.size else float("nan"),
            "median": float(np.median(v)) if v.size else float("nan"),
            "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "ci_low": lo,
            "ci_high": hi,
            "n": int(v.size),
        }
    return out


def rankdata(a: np.ndarray) -> np.ndarray:
    """Ranks 1..N of ``a`` with ties given their average rank (as ``scipy.stats.rankdata``)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    order = np.argsort(a, kind="mergesort")
    sorted_a = a[order]
    # Start index of each run of equal values; every member gets the run's mean rank.
    new_run = np.concatenate([[True], sorted_a[1:] != sorted_a[:-1]])
    run_id = np.cumsum(new_run) - 1
    starts = np.flatnonzero(new_run)
    ends = np.concatenate([starts[1:], [a.size]])
    avg = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(a.size)
    ranks[order] = avg[run_id]
    return ranks


def percentile_ranks(a: np.ndarray) -> np.ndarray:
    """Percentile rank in [0, 100] of every value of ``a`` among all of ``a``."""
    a = np.asarray(a)
    if a.size <= 1:
        return np.full(a.size, 50.0)
    return (rankdata(a) - 1) / (a.size - 1) * 100.0


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two equally long samples (average ranks for ties)."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if a.size != b.size:
        raise RobustlabError(f"cannot correlate {a.size} values with {b.size} values")
    if a.size < 2:
        return float("nan")
    ra, rb = rankdata(a), rankdata(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def confidence_disagreement(
    conf_a: np.ndarray, conf_b: np.ndarray, top_n: int = 8
) -> dict[str, Any]:
    """Where two models disagree about which samples are confident [reconstruction].

    Both confidences are over the same samples. Returns the percentile ranks of each model,
    their difference ``rank_a - rank_b``, the Spearman correlation, and the indices of the
    ``top_n`` samples that model A ranks most above B (``a_over_b``) and most below
    (``b_over_a``), most extreme first.
    """
    a, b = np.asarray(conf_a, dtype=np.float64), np.asarray(conf_b, dtype=np.float64)
    if a.shape != b.shape:
        raise RobustlabError(
            f"confidences cover different samples ({a.size} vs {b.size}); use the same test set"
        )
    ra, rb = percentile_ranks(a), percentile_ranks(b)
    diff = ra - rb
    order = np.argsort(-diff, kind="mergesort")
    n = min(top_n, a.size)
    return {
        "rank_a": ra,
        "rank_b": rb,
        "rank_diff": diff,
        "spearman": spearman(a, b),
        "mean_abs_rank_diff": float(np.abs(diff).mean()) if diff.size else float("nan"),
        "a_over_b": order[:n].tolist(),
        "b_over_a": order[::-1][:n].tolist(),
    }
