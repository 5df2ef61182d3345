"""Robust validation during training: clean and PGD accuracy on the held-out split.

One job: :func:`validate`. The PGD is :func:`robustlab.attacks.pgd.pgd`, the implementation
``robustlab eval --attack pgd`` runs, with its default step size
(:func:`robustlab.attacks.pgd.default_step_size`) when the config gives none.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustlab.attacks.base import attack_mode, make_generator
from robustlab.attacks.pgd import pgd
from robustlab.attacks.threat import make_threat
from robustlab.config import ValidationConfig
from robustlab.data.convert import to_float
from robustlab.train.distributed import all_reduce_sum

__all__ = ["validate"]


def validate(
    model: nn.Module,
    split: Any,
    cfg: ValidationConfig,
    batch_size: int,
    device: torch.device,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    channels_last: bool = False,
) -> dict[str, float]:
    """Clean and PGD accuracy of ``model`` on the first ``cfg.n`` images of ``split``.

    A sample counts as robust when both its clean and its adversarial prediction are right.
    Under DDP every rank takes every ``world_size``-th image and the counts are summed.
    """
    n = len(split) if cfg.n is None else min(cfg.n, len(split))
    idx = torch.arange(rank, n, world_size)
    counts = torch.zeros(3, dtype=torch.float64, device=device)
    atk = cfg.attack
    threat = make_threat(atk.norm, atk.eps) if atk is not None else None
    gen = make_generator(seed, device)
    with attack_mode(model):
        for chunk in idx.split(batch_size):
            x = to_float(split.images[chunk], device)
            y = split.labels[chunk].to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.no_grad():
                ok = model(x).argmax(1) == y
            counts[0] += ok.sum()
            counts[2] += y.numel()
            if atk is not None and threat is not None:
                x_adv = pgd(
                    model,
                    x,
                    y,
                    threat,
                    steps=atk.steps,
                    step_size=atk.step_size,
                    loss=atk.loss,
                    random_start=True,
                    generator=gen,
                )
                with torch.no_grad():
                    ok &= model(x_adv).argmax(1) == y
                counts[1] += ok.sum()
    all_reduce_sum(counts)
    clean, robust, total = counts.tolist()
    out = {"val_clean_acc": clean / max(total, 1), "val_n": int(total)}
    if atk is not None:
        out["val_robust_acc"] = robust / max(total, 1)
    return out
