"""Input-space Fisher information and the cross-class KL metric (Shi et al., arXiv:1906.02494).

``F(x) = sum_k p_k g_k g_k^T`` with ``g_k = grad_x log p_k(x)``. Writing ``A = diag(sqrt p) G``
(K x d, rows ``sqrt(p_k) g_k``) gives ``F = A^T A``, whose non-zero spectrum equals that of the
K x K matrix ``A A^T``: Frobenius norm, top eigenvalue and trace come from ``A A^T`` with K
backward passes and no d x d matrix. ``KL(p(x) || p(x + delta)) = delta^T F delta / 2 +
O(|delta|^3)``, so F carries the non-robust, small-perturbation part of the KL metric.
``explicit_fisher`` builds the d x d matrix for small inputs (tests and benchmarks only).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from robustlab.analysis._util import batches, check_batch, eval_mode, model_device
from robustlab.attacks.base import attack_mode
from robustlab.errors import RobustlabError

__all__ = [
    "log_prob_gradients",
    "fisher_gram",
    "fisher_summary",
    "explicit_fisher",
    "kl_divergence",
    "cross_class_kl",
]


def log_prob_gradients(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(p, G)``: probabilities (N, K) and gradients ``G[n, k] = grad_x log p_k`` (N, K, d).

    K backward passes over the batch, in eval mode with parameter gradients off.
    """
    check_batch(x)
    with attack_mode(model):
        xr = x.detach().clone().requires_grad_(True)
        logp = torch.log_softmax(model(xr), dim=1)
        rows = []
        k_total = logp.shape[1]
        for k in range(k_total):
            (g,) = torch.autograd.grad(logp[:, k].sum(), xr, retain_graph=k + 1 < k_total)
            rows.append(g.reshape(x.shape[0], -1))
    return logp.detach().exp(), torch.stack(rows, dim=1).detach()


def fisher_gram(model: nn.Module, x: Tensor) -> Tensor:
    """The K x K matrices ``A A^T`` (N, K, K), float64, with ``A = diag(sqrt p) G``."""
    p, g = log_prob_gradients(model, x)
    a = p.double().sqrt().unsqueeze(2) * g.double()
    return a @ a.transpose(1, 2)


def fisher_summary(model: nn.Module, x: Tensor, batch_size: int = 128) -> dict[str, np.ndarray]:
    """Per-sample Frobenius norm, top eigenvalue and trace of the input Fisher ``F(x)``.

    Computed from the K x K Gram matrix ``A A^T``; returns numpy arrays of shape (N,). Batches
    shrink below ``batch_size`` when K x d is large (the K gradients of a batch are held).
    """
    check_batch(x)
    dev = model_device(model)
    fro, top, tr = [], [], []
    if x.shape[0]:  # keep the (n, K, d) gradients of a batch under ~2^24 numbers
        with torch.no_grad(), eval_mode(model):
            k = model(x[:1].to(dev)).shape[1]
        batch_size = max(1, min(batch_size, 2**24 // (k * x[0].numel())))
    for s in batches(x.shape[0], batch_size):
        gram = fisher_gram(model, x[s].to(dev)).cpu()
        eig = torch.linalg.eigvalsh(gram)  # ascending; symmetric PSD
        fro.append(torch.linalg.matrix_norm(gram, ord="fro"))
        top.append(eig[:, -1].clamp_min(0))
        tr.append(gram.diagonal(dim1=1, dim2=2).sum(1))
    cat = lambda xs: torch.cat(xs).numpy() if xs else np.zeros(0)  # noqa: E731
    return {"fisher_fro": cat(fro), "fisher_top_eig": cat(top), "fisher_trace": cat(tr)}


def explicit_fisher(model: nn.Module, x: Tensor) -> Tensor:
    """The explicit d x d Fisher ``sum_k p_k g_k g_k^T`` per sample, (N, d, d), float64.

    Memory grows as d^2 per sample: for checks on small inputs only.
    """
    p, g = log_prob_gradients(model, x)
    g = g.double()
    return torch.einsum("nk,nki,nkj->nij", p.double(), g, g)


def kl_divergence(logits_p: Tensor, logits_q: Tensor) -> Tensor:
    """Per-row ``KL(softmax(logits_p) || softmax(logits_q))``."""
    lp = torch.log_softmax(logits_p.double(), dim=1)
    lq = torch.log_softmax(logits_q.double(), dim=1)
    return (lp.exp() * (lp - lq)).sum(1)


@torch.no_grad()
def cross_class_kl(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    group_size: int = 10,
    seed: int = 0,
    batch_size: int = 512,
) -> dict[str, float]:
    """The cross-class KL metric [code, grouping reconstructed]: the mean
    ``KL(p(x_i) || p(x_j))`` over ordered pairs with ``y_i != y_j`` inside random groups of
    ``group_size`` test samples (a seeded permutation), as the authors compare an anchor with
    the other images of a small group.
    """
    check_batch(x, y)
    if group_size < 2:
        raise RobustlabError(f"group_size must be at least 2, got {group_size}")
    dev = model_device(model)
    with eval_mode(model):
        z = torch.cat([model(x[s].to(dev)).cpu() for s in batches(x.shape[0], batch_size)])
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(z.shape[0], generator=gen)
    n_groups = z.shape[0] // group_size
    if n_groups == 0:
        raise RobustlabError(f"need at least {group_size} samples for one group, got {z.shape[0]}")
    idx = perm[: n_groups * group_size].reshape(n_groups, group_size)
    zg, yg = z[idx], y.cpu()[idx]  # (G, S, K), (G, S)
    lp = torch.log_softmax(zg.double(), dim=2)
    # kl[g, i, j] = sum_k p_i (log p_i - log p_j)
    neg_ent = (lp.exp() * lp).sum(2)  # (G, S)
    cross = torch.einsum("gik,gjk->gij", lp.exp(), lp)
    kl = neg_ent[:, :, None] - cross
    mask = yg[:, :, None] != yg[:, None, :]
    vals = kl[mask]
    return {
        "kl_metric": float(vals.mean()) if vals.numel() else float("nan"),
        "kl_metric_std": float(vals.std()) if vals.numel() > 1 else 0.0,
        "n_pairs": int(vals.numel()),
    }
