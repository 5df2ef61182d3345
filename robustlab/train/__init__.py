"""Training: the loop, optimizers and schedules, EMA, DDP, checkpoints and the run directory.

``train(config, run_dir=None, resume=False) -> Path`` runs a configuration
(:mod:`robustlab.config`); ``load_run_model(run_dir, which)`` rebuilds a trained model.
"""

from robustlab.train.callbacks import EpochContext, available_callbacks, register_callback
from robustlab.train.checkpoint import build_model, load_run_model, read_run_config
from robustlab.train.loop import train, validate
from robustlab.train.rundir import is_complete

__all__ = [
    "EpochContext",
    "available_callbacks",
    "build_model",
    "is_complete",
    "load_run_model",
    "read_run_config",
    "register_callback",
    "train",
    "validate",
]
