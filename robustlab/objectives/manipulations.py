"""Teacher-logit manipulations for distillation (Seguin et al., arXiv:2108.12001; a reconstruction).

Pure functions on an ``(N, K)`` logit tensor. Each keeps every row's argmax and its value
(the max logit) and changes only what the teacher says about the incorrect classes:

- ``shuffle``: permute the K-1 non-max logits of each row (keeps max, gap, entropy; destroys
  which incorrect class is which);
- ``mean``: replace the non-max logits by their mean (erases incorrect-class information);
- ``sorted_resample``: redraw the non-max values from the pooled non-max teacher values
  (restricted to values below the row's max), placed in the row's own class order;
- ``conf_swap``: rescale the row around its max, ``z' = m - s (m - z)``, so its gap
  (top-1 minus top-2) becomes that of another sample (keeps ordering, destroys sample-wise
  confidence);
- ``std_order``: the row's non-max values re-assigned to the classes in the order a second
  (standard) teacher ranks them.

Ties: the argmax is ``torch.argmax``'s (first index); exact ties of the max are not special-cased.
Randomness comes only from the ``generator`` argument.
"""

from __future__ import annotations

import torch
from torch import Tensor

from robustlab.errors import ConfigError

__all__ = [
    "MANIPULATIONS",
    "shuffle",
    "mean",
    "sorted_resample",
    "conf_swap",
    "std_order",
    "non_max_values",
    "top2_gap",
    "manipulate",
]


def _check(z: Tensor) -> None:
    if z.dim() != 2 or z.shape[1] < 2:
        raise ConfigError(f"teacher logits must have shape (N, K>=2), got {tuple(z.shape)}")


def _nonmax_positions(z: Tensor, by_value: bool) -> Tensor:
    """``(N, K-1)`` column indices of the non-max classes, ascending by index or by value."""
    k = z.shape[1]
    top = z.argmax(dim=1, keepdim=True)
    if by_value:
        key = z.detach().clone()
        key.scatter_(1, top, float("inf"))
    else:
        key = torch.arange(k, device=z.device, dtype=torch.float64).expand(z.shape[0], k).clone()
        key.scatter_(1, top, float(k))
    return key.argsort(dim=1, stable=True)[:, : k - 1]


def non_max_values(z: Tensor) -> Tensor:
    """``(N, K-1)`` non-max logits of each row, sorted ascending."""
    return z.gather(1, _nonmax_positions(z, by_value=True))


def top2_gap(z: Tensor) -> Tensor:
    """Per-row gap between the largest and second largest logit."""
    t = z.topk(2, dim=1).values
    return t[:, 0] - t[:, 1]


def shuffle(z: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Randomly permute the non-max logits within each row."""
    _check(z)
    n, k = z.shape
    dst = _nonmax_positions(z, by_value=False)
    perm = torch.rand(n, k - 1, generator=generator, device=z.device).argsort(dim=1)
    src = dst.gather(1, perm)
    return z.clone().scatter_(1, dst, z.gather(1, src))


def mean(z: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Replace every non-max logit of a row by the mean of the row's non-max logits."""
    _check(z)
    dst = _nonmax_positions(z, by_value=False)
    m = z.gather(1, dst).mean(dim=1, keepdim=True)
    return z.clone().scatter_(1, dst, m.expand_as(dst).to(z.dtype))


def sorted_resample(
    z: Tensor, generator: torch.Generator | None = None, pool: Tensor | None = None
) -> Tensor:
    """Draw each row's K-1 non-max values from ``pool`` and place them in the row's class order.

    ``pool`` (1-D) defaults to every non-max logit of ``z``. Each row draws from the pool
    restricted to values strictly below its own max (so argmax and max survive); the drawn
    values are sorted and assigned so that the row's ranking of its classes is unchanged.
    A row whose max is below every pooled value keeps its logits.
    """
    _check(z)
    n, k = z.shape
    pool = non_max_values(z).reshape(-1) if pool is None else pool.reshape(-1)
    pool = pool.to(device=z.device, dtype=z.dtype).sort().values
    top = z.max(dim=1).values
    below = torch.searchsorted(pool, top.contiguous(), right=False)  # count of pool < max
    u = torch.rand(n, k - 1, generator=generator, device=z.device, dtype=torch.float64)
    idx = (u * below[:, None].to(torch.float64)).floor().long().clamp(max=pool.numel() - 1)
    drawn = pool[idx].sort(dim=1).values
    dst = _nonmax_positions(z, by_value=True)  # non-max classes, ascending by teacher value
    out = z.clone().scatter_(1, dst, drawn)
    return torch.where((below > 0)[:, None], out, z)


def conf_swap(
    z: Tensor, generator: torch.Generator | None = None, gaps: Tensor | None = None
) -> Tensor:
    """Rescale each row around its max so its top-2 gap becomes a randomly drawn other gap.

    ``gaps`` (1-D, positive) defaults to the gaps of the rows of ``z``; each row draws one
    uniformly. ``z' = m - (g_new / g_row) (m - z)`` keeps the max ``m``, the argmax and the
    order of all classes. Rows with a zero gap are left unchanged.
    """
    _check(z)
    g_row = top2_gap(z)
    pool = g_row if gaps is None else gaps.reshape(-1).to(device=z.device, dtype=z.dtype)
    pool = pool[pool > 0]
    if pool.numel() == 0:
        return z.clone()
    pick = torch.randint(0, pool.numel(), (z.shape[0],), generator=generator, device=z.device)
    g_new = pool[pick]
    ok = g_row > 0
    scale = torch.where(ok, g_new / g_row.clamp_min(torch.finfo(z.dtype).tiny), 1.0)
    m = z.max(dim=1, keepdim=True).values
    out = m - scale[:, None] * (m - z)
    return out.scatter(1, z.argmax(dim=1, keepdim=True), m)  # the max exactly, no rounding


def std_order(z: Tensor, z_std: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """The row's non-max values assigned to its non-max classes in ``z_std``'s order.

    The class that ``z`` ranks top keeps its value; the other classes are ranked by the
    standard teacher's logits ``z_std`` and receive ``z``'s sorted non-max values in that order.
    """
    _check(z)
    if z_std.shape != z.shape:
        raise ConfigError(
            f"std_order needs two teachers with the same logit shape, got {tuple(z.shape)} and "
            f"{tuple(z_std.shape)}"
        )
    top = z.argmax(dim=1, keepdim=True)
    key = z_std.to(z.dtype).clone().scatter_(1, top, float("inf"))
    dst = key.argsort(dim=1, stable=True)[:, : z.shape[1] - 1]
    return z.clone().scatter_(1, dst, non_max_values(z))


MANIPULATIONS = ("none", "shuffle", "mean", "sorted_resample", "conf_swap", "std_order")


def manipulate(
    name: str,
    z: Tensor,
    generator: torch.Generator | None = None,
    *,
    pool: Tensor | None = None,
    gaps: Tensor | None = None,
    z_std: Tensor | None = None,
) -> Tensor:
    """Apply the manipulation ``name`` (one of :data:`MANIPULATIONS`) to ``z``."""
    if name == "none":
        return z.clone()
    if name == "shuffle":
        return shuffle(z, generator)
    if name == "mean":
        return mean(z, generator)
    if name == "sorted_resample":
        return sorted_resample(z, generator, pool)
    if name == "conf_swap":
        return conf_swap(z, generator, gaps)
    if name == "std_order":
        if z_std is None:
            raise ConfigError("manipulation 'std_order' needs the standard teacher's logits")
        return std_order(z, z_std, generator)
    raise ConfigError(f"unknown manipulation {name!r}; choose one of {list(MANIPULATIONS)}")
