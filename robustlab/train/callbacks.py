"""Per-epoch hooks: a registry of callbacks by name, built from the ``callbacks`` config list.

A callback is any object with ``on_epoch_end(ctx: EpochContext) -> None``, registered under a
name with :func:`register_callback` (a class or factory taking the config's keyword
arguments). Higher layers (``robustlab.analysis``) register theirs without this module
importing them: names not yet registered are looked up once in the plugin modules listed in
``PLUGIN_MODULES``, imported lazily.
"""

from __future__ import annotations

import importlib
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
    "PLUGIN_MODULES",
]

# Modules that register callbacks when imported (imported only when a name is looked up).
PLUGIN_MODULES = ["robustlab.analysis.callbacks", "robustlab.analysis.snapshots"]


@dataclass
class EpochContext:
    """What a callback sees at the end of an epoch (rank 0 only).

    ``model`` is the delivered model (EMA weights when EMA is on), unwrapped and in eval mode;
    ``raw_model`` the trained weights themselves. ``log`` adds numbers to the epoch record of
    ``metrics.jsonl``; ``run_dir / "analysis"`` is the place for files.
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
    metrics: dict[str, Any] = field(default_factory=dict)

    def log(self, values: dict[str, Any]) -> None:
        """Add ``values`` (numbers) to this epoch's record."""
        self.metrics.update(values)


class Callback(Protocol):
    def on_epoch_end(self, ctx: EpochContext) -> None: ...


_CALLBACKS: dict[str, Callable[..., Callback]] = {}
_plugins_loaded = False


def register_callback(name: str) -> Callable[[Callable[..., Callback]], Callable[..., Callback]]:
    """Decorator registering a callback class or factory under ``name``."""

    def deco(factory: Callable[..., Callback]) -> Callable[..., Callback]:
        _CALLBACKS[name] = factory
        return factory

    return deco


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for mod in PLUGIN_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name is None or not mod.startswith(e.name):
                raise


def available_callbacks() -> list[str]:
    """Names of all registered callbacks (plugins included)."""
    _load_plugins()
    return sorted(_CALLBACKS)


def create_callback(spec: CallbackConfig) -> Callback:
    """Build one callback from its config entry; unknown names list the known ones."""
    if spec.name not in _CALLBACKS:
        _load_plugins()
    if spec.name not in _CALLBACKS:
        raise ConfigError(
            f"callbacks: unknown callback {spec.name!r}; choose one of {available_callbacks()}"
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
