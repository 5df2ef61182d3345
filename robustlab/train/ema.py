"""Exponential moving average of a model's weights (parameters averaged, buffers copied)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ["ModelEMA"]


class ModelEMA:
    """``ema = d * ema + (1 - d) * theta`` after every optimizer step.

    With ``warmup`` the decay at update ``n`` is ``min(decay, (1 + n) / (10 + n))``, so early
    averages are not dominated by the random initialization. Buffers (BatchNorm statistics)
    are copied. ``module`` is a frozen copy of the model in eval mode holding the average.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self._ema_params = [p for p in self.module.parameters()]
        self._ema_buffers = [b for b in self.module.buffers()]

    def current_decay(self) -> float:
        n = self.updates
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the current weights of ``model`` (same architecture, unwrapped) in."""
        d = self.current_decay()
        params = [p.detach() for p in model.parameters()]
        if self._ema_params:
            torch._foreach_lerp_(self._ema_params, params, 1.0 - d)
        for e, b in zip(self._ema_buffers, model.buffers(), strict=True):
            e.copy_(b)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "model": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["model"])
