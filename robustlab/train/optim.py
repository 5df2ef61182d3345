"""Optimizers (SGD, Adam, AdamW with weight-decay groups) and per-step learning-rate schedules.

Schedules are functions of the optimizer step, so warm-up, milestones and cosine decay work
with fractional epochs and resume exactly; they are applied with ``LambdaLR`` (its state, a
step counter, is saved in checkpoints).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from robustlab.config import OptimConfig, ScheduleConfig

__all__ = [
    "param_groups",
    "build_optimizer",
    "lr_factor",
    "build_scheduler",
    "cycled_momentum",
    "CycledMomentumLR",
]

_NORM_TYPES = (
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


def param_groups(
    model: nn.Module, weight_decay: float, exclude_norm_bias: bool = True
) -> list[dict[str, Any]]:
    """Split trainable parameters into a decayed group and (optionally) a group of biases and
    normalization weights without weight decay."""
    if not exclude_norm_bias or weight_decay == 0:
        params = [p for p in model.parameters() if p.requires_grad]
        return [{"params": params, "weight_decay": weight_decay}]
    no_decay: set[int] = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if isinstance(module, _NORM_TYPES) or name.endswith("bias") or p.ndim <= 1:
                no_decay.add(id(p))
    decay, plain = [], []
    for p in model.parameters():
        if p.requires_grad:
            (plain if id(p) in no_decay else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if plain:
        groups.append({"params": plain, "weight_decay": 0.0})
    return groups


def build_optimizer(
    model: nn.Module, cfg: OptimConfig, device: torch.device | None = None
) -> torch.optim.Optimizer:
    """The optimizer of ``cfg`` over ``model``'s parameters.

    ``cfg.fused=None`` uses the fused kernels on CUDA and the multi-tensor (foreach) ones on
    the CPU.
    """
    groups = param_groups(model, cfg.weight_decay, cfg.wd_exclude_norm_bias)
    dev = device or next(model.parameters()).device
    fused = cfg.fused if cfg.fused is not None else dev.type == "cuda"
    impl: dict[str, Any] = {"fused": True} if fused else {"foreach": True}
    if cfg.name == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, **impl
        )
    betas = (float(cfg.betas[0]), float(cfg.betas[1]))
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=betas, **impl)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, **impl)


def lr_factor(
    step: int,
    total_steps: int,
    steps_per_epoch: int,
    cfg: ScheduleConfig,
    min_factor: float = 0.0,
) -> float:
    """Multiplier of the base learning rate before optimizer step ``step`` (from 0).

    ``warmup_epochs`` rises linearly from ``1/warmup_steps`` to 1; then ``constant``,
    ``multistep`` (times ``gamma`` at each milestone epoch), ``cosine`` (to ``min_factor``) or
    ``onecycle`` (linear rise over ``pct_start`` of training when there is no warm-up, then
    cosine annealing to 0) or ``cyclic`` (one triangle: linear from ``min_factor`` at step 0 to
    1 at ``pct_start`` of training and linearly back, as PyTorch's ``CyclicLR`` with
    ``step_size_up = pct_start * total``).
    """
    total = max(total_steps, 1)
    if cfg.name == "cyclic":
        up = cfg.pct_start * total
        tri = step / up if step <= up else max(0.0, (total - step) / (total - up))
        return min_factor + (1.0 - min_factor) * tri
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))
    if cfg.name == "onecycle" and warm == 0:
        warm = max(1, int(round(cfg.pct_start * total)))
    if warm > 0 and step < warm:
        return (step + 1) / warm
    if cfg.name == "constant":
        return 1.0
    if cfg.name == "multistep":
        epoch = step / max(steps_per_epoch, 1)
        return cfg.gamma ** sum(1 for m in cfg.milestones if epoch >= m)
    progress = min(1.0, (step - warm) / max(total - warm, 1))
    cos = 0.5 * (1.0 + math.cos(math.pi * progress))
    if cfg.name == "cosine":
        return min_factor + (1.0 - min_factor) * cos
    return cos  # onecycle


def cycled_momentum(factor: float, floor: float, high: float, low: float) -> float:
    """SGD momentum at lr factor ``factor``: ``high`` at the schedule's floor, ``low`` at its
    peak, linear in between (``CyclicLR``'s ``cycle_momentum``)."""
    rise = (factor - floor) / (1.0 - floor) if floor < 1.0 else 1.0
    return high - (high - low) * min(1.0, max(0.0, rise))


class CycledMomentumLR(torch.optim.lr_scheduler.LambdaLR):
    """``LambdaLR`` that also sets each group's SGD momentum from its lr factor
    (:func:`cycled_momentum`). Only numbers are stored, so its state dict loads with
    ``weights_only=True``; the momentum follows from the restored step."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        factor: Callable[[int], float],
        floor: float,
        high: float,
        low: float,
    ) -> None:
        self.floor, self.high, self.low = float(floor), float(high), float(low)
        super().__init__(optimizer, factor)

    def step(self, epoch: int | None = None) -> None:
        super().step(epoch)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            f = group["lr"] / base if base > 0 else 0.0
            group["momentum"] = cycled_momentum(f, self.floor, self.high, self.low)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: ScheduleConfig,
    steps_per_epoch: int,
    epochs: int,
    base_lr: float,
    momentum: float | None = None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step ``LambdaLR`` following :func:`lr_factor`; with ``cfg.base_momentum`` a
    :class:`CycledMomentumLR` cycling SGD's momentum between ``momentum`` (the optimizer's,
    at the lr floor) and ``cfg.base_momentum`` (at the peak)."""
    total = steps_per_epoch * epochs
    floor = cfg.min_lr / base_lr if base_lr > 0 else 0.0

    def factor(step: int) -> float:
        return lr_factor(step, total, steps_per_epoch, cfg, floor)

    if cfg.base_momentum is None:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    if momentum is None:
        raise ValueError("build_scheduler: schedule.base_momentum needs the optimizer's momentum")
    return CycledMomentumLR(optimizer, factor, floor, momentum, cfg.base_momentum)
