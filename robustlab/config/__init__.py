"""Typed, validated training configuration: recipe YAML + ``key=value`` overrides -> ``Config``.

The schema (``schema.py``) is a tree of dataclasses; a small validator (``build.py``) walks it
using the type hints and the field metadata (``choices``, bounds). Unknown keys raise
:class:`~robustlab.errors.ConfigError` naming the key and the allowed keys; bad values name the
key and the allowed values. Floats accept fractions such as ``"8/255"``. The ``objective``
section is a name plus free hyperparameters, validated by the objective's own dataclass
(:func:`check_objective`, ``load.py``). See ``docs/recipes.md`` for the schema.
"""

from robustlab.config.build import config_from_dict, parse_float
from robustlab.config.load import (
    RESUMABLE_DIFFS,
    apply_overrides,
    check_objective,
    check_same_config,
    config_diff,
    load_config,
    parse_overrides,
)
from robustlab.config.schema import (
    AttackConfig,
    AugmentConfig,
    CallbackConfig,
    Config,
    DataConfig,
    ModelConfig,
    ObjectiveConfig,
    OptimConfig,
    ScheduleConfig,
    TrainConfig,
    ValidationConfig,
)

__all__ = [
    "AugmentConfig",
    "DataConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "OptimConfig",
    "ScheduleConfig",
    "TrainConfig",
    "AttackConfig",
    "ValidationConfig",
    "CallbackConfig",
    "Config",
    "load_config",
    "config_from_dict",
    "apply_overrides",
    "parse_overrides",
    "parse_float",
    "check_objective",
    "config_diff",
    "check_same_config",
    "RESUMABLE_DIFFS",
]
