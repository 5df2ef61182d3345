"""The composition root for Python users: ``robustlab.api.train`` runs a configuration with
robustlab's own callbacks (``analysis``, ``snapshot``) available by name.

One job: compose a run the way ``robustlab train`` does. The training loop
(:func:`robustlab.train.train`) only looks callback names up in the registry; this module
imports the layer that registers them (``robustlab.analysis``), builds the configured callbacks
and hands them to the loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["train", "compose_callbacks"]


def compose_callbacks(config: Any) -> list[tuple[Any, Any]]:
    """The configured callbacks, built with robustlab's own registered (``analysis``,
    ``snapshot``) next to any registered by modules already imported."""
    import robustlab.analysis  # noqa: F401 - registers the analysis and snapshot callbacks
    from robustlab.train.callbacks import build_callbacks

    return build_callbacks(config)


def train(
    config: Any,
    run_dir: str | Path | None = None,
    resume: bool = False,
    extra_callbacks: list[tuple[Any, Any]] | None = None,
) -> Path:
    """Train ``config`` (a :class:`~robustlab.config.Config` or its dict) into ``run_dir``.

    The callbacks of ``config.callbacks`` are built here; ``extra_callbacks``
    (``[(CallbackConfig, callback), ...]``) run after them. Returns the complete run directory.
    """
    from robustlab.config import Config, check_objective, config_from_dict
    from robustlab.train import train as train_loop

    cfg = config if isinstance(config, Config) else config_from_dict(config)
    check_objective(cfg)  # a bad objective is reported before a callback is built
    callbacks = compose_callbacks(cfg) + list(extra_callbacks or [])
    return train_loop(cfg, run_dir=run_dir, resume=resume, callbacks=callbacks)
