"""Validation of the FAB boundary solver's inputs (:mod:`robustlab.attacks.boundary`).

One job: check the solver's parameters, inputs and per-sample radii, raising
:class:`~robustlab.errors.RobustlabError` (or :class:`AttackInputError`) with a message that
names the problem, before any model call.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from robustlab.attacks.base import AttackInputError
from robustlab.attacks.threat import ThreatModel
from robustlab.errors import RobustlabError

__all__ = ["PhiFn", "as_vector", "check_params", "check_search_inputs"]

PhiFn = Callable[[Tensor, Tensor], Tensor]  # per-sample phi(logits, y) -> (N,)


def as_vector(v: float | Tensor | None, n: int, like: Tensor, name: str) -> Tensor | None:
    if v is None:
        return None
    out = torch.as_tensor(v, dtype=like.dtype, device=like.device).flatten()
    if out.numel() == 1:
        out = out.expand(n)
    if out.numel() != n:
        raise RobustlabError(f"{name} must be a number or a tensor of {n} values")
    if bool((out <= 0).any()) or bool(torch.isnan(out).any()):
        raise RobustlabError(f"{name} must be positive")
    return out.clone()


def check_params(steps: int, restarts: int, alpha_max: float, eta: float, beta: float) -> None:
    if int(steps) != steps or steps < 0:
        raise RobustlabError(f"steps must be a non-negative integer, got {steps!r}")
    if int(restarts) != restarts or restarts < 1:
        raise RobustlabError(f"restarts must be a positive integer, got {restarts!r}")
    if not 0.0 < alpha_max <= 1.0:
        raise RobustlabError(f"alpha_max must be in (0, 1], got {alpha_max!r}")
    if not eta >= 1.0:
        raise RobustlabError(f"eta (overshoot) must be >= 1, got {eta!r}")
    if not 0.0 < beta <= 1.0:
        raise RobustlabError(f"beta (backward step) must be in (0, 1], got {beta!r}")


def check_search_inputs(
    x: Tensor, y: Tensor, phi: PhiFn | None, threat: ThreatModel, targeted_class: Tensor | None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Validate the solver's inputs; returns detached ``x``, long ``y`` and the targets."""
    if phi is not None and targeted_class is not None:
        raise RobustlabError("give either phi or targeted_class, not both")
    if not isinstance(threat, ThreatModel):
        raise RobustlabError(f"threat must be a ThreatModel, got {type(threat).__name__}")
    if not isinstance(x, Tensor) or x.dim() < 2 or not x.is_floating_point():
        raise AttackInputError("x must be a floating-point batch (N, ...)")
    x = x.detach()
    n = x.shape[0]
    y = y.to(device=x.device, dtype=torch.long)
    if y.shape != (n,):
        raise AttackInputError(f"batch has {n} inputs but labels have shape {tuple(y.shape)}")
    t_all = None
    if targeted_class is not None:
        t_all = targeted_class.to(device=x.device, dtype=torch.long).reshape(-1)
        if t_all.shape != (n,):
            raise AttackInputError("targeted_class must hold one target per sample")
        if bool((t_all == y).any()):
            raise AttackInputError("targeted_class must differ from the label y")
    return x, y, t_all
