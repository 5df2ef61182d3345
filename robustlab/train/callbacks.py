"""Per-epoch hooks: a registry of callbacks by name, built from the ``callbacks`` config list.

A callback is any object with ``on_epoch_end(ctx: EpochContext) -> None``, registered under a
name with :func:`register_callback` (a class or factory taking the config's keyword
arguments). Callbacks are built where a run is composed, not by the loop: ``robustlab train``
and :func:`robustlab.api.train` import the modules that register robustlab's own callbacks
(``robustlab.analysis``) and pass the built callbacks to :func:`robustlab.train.train`, which
only looks names up in this registry. Nothing here imports a higher layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from robustlab.config import CallbackConfig, Config
from robustlab.errors import ConfigError

__all__ = [
    "EpochContext",
    "Callback",
    "register_callback",
    "available_callbacks",
    "create_callback",
    "build_callbacks",
]


@dataclass
class EpochContext:
    """What a callback sees at the end of an epoch (rank 0 only): the live run.

    ``model`` is the delivered model (EMA weights when EMA is on), unwrapped and in eval mode;
    ``raw_model`` the trained (live) weights themselves; ``ema_model`` the EMA model (None
    without EMA); :meth:`model_for` picks one by name. ``objective`` is the live training
    objective (with its per-sample caches, e.g. distillation's teacher targets, indexed by
    training-set index) and ``batch_index`` the training-set indices of the epoch's last batch.
    ``log`` adds numbers to the epoch record of ``metrics.jsonl``; files go under
    ``RunDir(run_dir).analysis_dir``.
    """

    model: nn.Module
    raw_model: nn.Module
    data: Any
    epoch: int
    step: int
    run_dir: Path
    config: Config
    device: torch.device
    rank: int = 0
    objective: Any = None
    ema_model: nn.Module | None = None
    batch_index: torch.Tensor | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def model_for(self, weights: str = "delivered") -> nn.Module:
        """``delivered`` (EMA when on), ``live`` (the trained weights) or ``ema``."""
        if weights == "delivered":
            return self.model
        if weights == "live":
            return self.raw_model
        if weights == "ema" and self.ema_model is not None:
            return self.ema_model
        if weights == "ema":
            raise ConfigError("callbacks: weights=ema needs train.ema_decay > 0")
        raise ConfigError(f"callbacks: weights must be delivered, live or ema, not {weights!r}")

    def log(self, values: dict[str, Any]) -> None:
        """Add ``values`` (numbers) to this epoch's record."""
        self.metrics.update(values)


class Callback(Protocol):
    def on_epoch_end(self, ctx: EpochContext) -> None: ...


_CALLBACKS: dict[str, Callable[..., Callback]] = {}


def register_callback(name: str) -> Callable[[Callable[..., Callback]], Callable[..., Callback]]:
    """Decorator registering a callback class or factory under ``name``."""

    def deco(factory: Callable[..., Callback]) -> Callable[..., Callback]:
        _CALLBACKS[name] = factory
        return factory

    return deco


def available_callbacks() -> list[str]:
    """Names of all registered callbacks."""
    return sorted(_CALLBACKS)


def create_callback(spec: CallbackConfig) -> Callback:
    """Build one callback from its config entry; unknown names list the known ones."""
    if spec.name not in _CALLBACKS:
        raise ConfigError(
            f"callbacks: unknown callback {spec.name!r}; choose one of {available_callbacks()} "
            "(robustlab's own are registered by importing robustlab.analysis, which "
            "robustlab train and robustlab.api.train do)"
        )
    try:
        cb = _CALLBACKS[spec.name](**spec.kwargs)
    except TypeError as e:
        raise ConfigError(f"callbacks: {spec.name}: {e}") from None
    if not callable(getattr(cb, "on_epoch_end", None)):
        raise ConfigError(f"callbacks: {spec.name!r} has no on_epoch_end(ctx) method")
    return cb


def build_callbacks(cfg: Config) -> list[tuple[CallbackConfig, Callback]]:
    """Every configured callback with its config entry (for ``every``)."""
    return [(spec, create_callback(spec)) for spec in cfg.callbacks]
