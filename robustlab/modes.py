"""The one context manager for model modes: :func:`model_mode`.

One job: switch a model to eval or train mode (or leave its modes), turn parameter gradients
off, keep BatchNorm running statistics untouched, and restore every submodule's own mode, every
parameter's ``requires_grad`` and the statistics on exit. Attacks (``attack_mode``), the
objectives' inner maximization (``inner_max``), evaluation, the teacher cache and the analyses
all go through it, so a frozen submodule (a teacher or a backbone in eval mode inside a model
in train mode) keeps its mode everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from robustlab.errors import RobustlabError

__all__ = ["model_mode", "MODES"]

MODES = ("eval", "train", "keep")


def _bn_buffers(model: nn.Module) -> list[Tensor]:
    out: list[Tensor] = []
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            out += [
                b for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None
            ]
    return out


@contextmanager
def model_mode(
    model: nn.Module,
    mode: Literal["eval", "train", "keep"] = "eval",
    param_grads: bool = False,
    bn_stats: Literal["keep", "update"] = "keep",
) -> Iterator[nn.Module]:
    """Run a block with ``model`` in ``mode``; restore everything on exit.

    Args:
        mode: ``eval`` (BatchNorm uses its running statistics, no dropout), ``train`` (batch
            statistics, dropout) or ``keep`` (leave every submodule's mode as it is).
        param_grads: leave parameters' ``requires_grad`` as they are (True) or turn them off
            (False, the default: no parameter graph is built, no ``.grad`` written).
        bn_stats: ``keep`` (default): BatchNorm running statistics (and their counters) are
            restored on exit, so forwards in train mode leave them untouched; ``update``: they
            change as a train-mode forward changes them (adversarial training in train mode).

    On exit every submodule gets back its own ``training`` flag (not the top module's), and
    every parameter its ``requires_grad``.
    """
    if mode not in MODES:
        raise RobustlabError(f"model mode {mode!r}: choose one of {', '.join(MODES)}")
    if bn_stats not in ("keep", "update"):
        raise RobustlabError(f"bn_stats {bn_stats!r}: choose keep or update")
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    saved = []
    if bn_stats == "keep" and mode != "eval":  # in eval mode BatchNorm never updates them
        saved = [(b, b.detach().clone()) for b in _bn_buffers(model)]
    if mode != "keep":
        model.train(mode == "train")
    if not param_grads:
        for p, _ in flags:
            p.requires_grad_(False)
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training
        for p, req in flags:
            p.requires_grad_(req)
        with torch.no_grad():
            for b, value in saved:
                b.copy_(value)
