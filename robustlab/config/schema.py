"""The training configuration's schema: a tree of dataclasses with field bounds.

One job: the typed shape of ``Config`` (validated by :mod:`robustlab.config.build`). See
``docs/recipes.md`` for the keys.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

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
]


def _meta(
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    doc: str = "",
) -> dict[str, Any]:
    return {"ge": ge, "gt": gt, "le": le, "lt": lt, "doc": doc}


def _f(default: Any = dataclasses.MISSING, **kw: Any) -> Any:
    """A dataclass field with validation metadata (bounds)."""
    if isinstance(default, (list, dict)):
        value = default
        return field(default_factory=lambda: copy.deepcopy(value), metadata=_meta(**kw))
    return field(default=default, metadata=_meta(**kw))


@dataclass
class AugmentConfig:
    """Training-time data augmentation."""

    crop_padding: int = _f(0, ge=0)
    hflip: bool = False


@dataclass
class DataConfig:
    """Which data to train on and how to batch it."""

    dataset: str = "mnist"
    data_dir: str | None = None
    n_train: int | None = _f(None, gt=0)
    n_val: int = _f(0, ge=0)
    batch_size: int = _f(128, gt=0)
    eval_batch_size: int = _f(500, gt=0)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class ModelConfig:
    """The architecture, passed to ``robustlab.models.create_model``; ``weights`` (a checkpoint
    file or a run directory) initializes it for fine-tuning. ``input_norm``: auto | dataset |
    none | "MEAN,STD" (the normalization inside the model); ``bn_momentum``: every BatchNorm's
    momentum (null: PyTorch's 0.1)."""

    name: str = "lenet5"
    norm: str | None = None
    act: str | None = None
    input_norm: str = "auto"
    bn_momentum: float | None = _f(None, ge=0, le=1)
    weights: str | None = None
    remap: Literal["none", "auto"] = "none"
    kwargs: dict[str, Any] = _f({})


@dataclass
class ObjectiveConfig:
    """An objective name plus its hyperparameters (validated by the objective itself)."""

    name: str = "standard"
    params: dict[str, Any] = _f({})


@dataclass
class OptimConfig:
    """The optimizer."""

    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = _f(0.1, gt=0)
    momentum: float = _f(0.9, ge=0, lt=1)
    nesterov: bool = False
    betas: list[float] = _f([0.9, 0.999])
    weight_decay: float = _f(5e-4, ge=0)
    wd_exclude_norm_bias: bool = True
    clip_grad_norm: float | None = _f(None, gt=0)
    fused: bool | None = None


@dataclass
class ScheduleConfig:
    """The learning-rate schedule (per step), with optional linear warm-up."""

    name: Literal["constant", "multistep", "cosine", "onecycle", "cyclic"] = "cosine"
    warmup_epochs: float = _f(0.0, ge=0)
    milestones: list[float] = _f([])
    gamma: float = _f(0.1, gt=0)
    min_lr: float = _f(0.0, ge=0)
    pct_start: float = _f(0.3, gt=0, lt=1)
    base_momentum: float | None = _f(None, ge=0, lt=1)


@dataclass
class TrainConfig:
    """The loop: length, EMA, precision, memory format, device, logging and checkpoints."""

    epochs: int = _f(10, gt=0)
    ema_decay: float = _f(0.0, ge=0, lt=1)
    ema_warmup: bool = True
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = True
    compile: bool = False
    device: str = "auto"
    sync_bn: bool = False
    log_every: int = _f(50, ge=0)
    checkpoint_every: int = _f(0, ge=0)
    progress: bool = True
    tensorboard: bool = True


@dataclass
class AttackConfig:
    """The attack used for robust validation."""

    name: Literal["pgd"] = "pgd"
    norm: Literal["linf", "l2", "l1"] = "linf"
    eps: float = _f(0.3, gt=0)
    steps: int = _f(10, gt=0)
    step_size: float | None = _f(None, gt=0)
    loss: Literal["ce", "margin", "dlr"] = "ce"


@dataclass
class ValidationConfig:
    """Robust validation on the held-out split and best-checkpoint selection."""

    every: int = _f(1, ge=0)
    n: int | None = _f(None, gt=0)
    select: Literal["robust", "clean"] = "robust"
    attack: AttackConfig | None = field(default_factory=AttackConfig)


@dataclass
class CallbackConfig:
    """A per-epoch hook from ``robustlab.train.callbacks`` and its keyword arguments."""

    name: str
    every: int = _f(1, gt=0)
    kwargs: dict[str, Any] = _f({})


@dataclass
class Config:
    """A whole training run."""

    name: str = "run"
    seed: int = _f(0, ge=0)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    callbacks: list[CallbackConfig] = _f([])

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict in the recipe layout (``objective`` flattened, as in YAML)."""
        d = dataclasses.asdict(self)
        obj = d.pop("objective")
        d_obj = {"name": obj["name"], **obj["params"]}
        out: dict[str, Any] = {}
        for k, v in d.items():
            out[k] = v
            if k == "model":
                out["objective"] = d_obj
        return out

    def to_yaml(self) -> str:
        """The resolved configuration as YAML (what ``RUN/config.yaml`` holds)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)
