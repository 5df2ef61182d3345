"""Typed, validated training configuration: recipe YAML + ``key=value`` overrides -> ``Config``.

The schema is a tree of dataclasses; a small validator walks it using the type hints and the
field metadata (``choices``, bounds). Unknown keys raise :class:`~robustlab.errors.ConfigError`
naming the key and the allowed keys; bad values name the key and the allowed values. Floats
accept fractions such as ``"8/255"``. The ``objective`` section is a name plus free
hyperparameters, validated by the objective's own dataclass (:func:`check_objective`).
See ``docs/recipes.md`` for the schema.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from robustlab.errors import ConfigError
from robustlab.resources import resolve_recipe

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
]

_NUM = r"[-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?"
_FRACTION = re.compile(rf"^\s*{_NUM}\s*/\s*{_NUM}\s*$")


_SCI = re.compile(r"^\s*[-+]?[0-9]*\.?[0-9]+[eE][-+]?[0-9]+\s*$")  # YAML 1.1 reads 1e-3 as text


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
    file or a run directory) initializes it for fine-tuning."""

    name: str = "lenet5"
    norm: str | None = None
    act: str | None = None
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

    name: Literal["constant", "multistep", "cosine", "onecycle"] = "cosine"
    warmup_epochs: float = _f(0.0, ge=0)
    milestones: list[float] = _f([])
    gamma: float = _f(0.1, gt=0)
    min_lr: float = _f(0.0, ge=0)
    pct_start: float = _f(0.3, gt=0, lt=1)


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


# ----------------------------------------------------------------------------------- parsing


def parse_float(value: Any, key: str = "value") -> float:
    """A float from a number or a string such as ``"0.3"`` or ``"8/255"``."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        s = value.strip()
        try:
            if _FRACTION.match(s):
                num, den = s.split("/")
                return float(num) / float(den)
            return float(s)
        except (ValueError, ZeroDivisionError):
            pass
    raise ConfigError(f"{key}: expected a number (e.g. 0.3 or 8/255), got {value!r}")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, str(tp)
    )


def _check_bounds(value: float, meta: Any, key: str) -> None:
    if not meta:
        return
    checks = [
        ("ge", lambda v, b: v >= b, ">="),
        ("gt", lambda v, b: v > b, ">"),
        ("le", lambda v, b: v <= b, "<="),
        ("lt", lambda v, b: v < b, "<"),
    ]
    parts = [f"{sym} {meta[name]}" for name, _, sym in checks if meta.get(name) is not None]
    for name, ok, _ in checks:
        bound = meta.get(name)
        if bound is not None and not ok(value, bound):
            raise ConfigError(f"{key}: must be {' and '.join(parts)}, got {value!r}")


def _coerce(value: Any, tp: Any, key: str, meta: Any = None) -> Any:
    """Check/convert ``value`` to type ``tp``; errors name ``key`` and the allowed values."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{key}: must be {_type_name(tp)}, got null")
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key, meta)
            except ConfigError as e:
                errors.append(e)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(f"{key}: must be {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        v = value.lower() if isinstance(value, str) else value
        if v not in allowed:
            raise ConfigError(
                f"{key}: {value!r} is not allowed; choose one of {', '.join(map(str, allowed))}"
            )
        return v
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: must be {_type_name(tp)}, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]", meta) for i, v in enumerate(value)]
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: must be a mapping, got {value!r}")
        return {str(k): _normalize_free(v) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        ):
            if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
                value = int(value)
            else:
                raise ConfigError(f"{key}: must be an integer, got {value!r}")
        value = int(value)
        _check_bounds(value, meta, key)
        return value
    if tp is float:
        v = parse_float(value, key)
        if not math.isfinite(v):
            raise ConfigError(f"{key}: must be finite, got {value!r}")
        _check_bounds(v, meta, key)
        return v
    if tp is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{key}: must be a non-empty string, got {value!r}")
        return value
    if tp is Any:
        return value
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover


def _normalize_free(value: Any) -> Any:
    """Free-form values (objective hyperparameters, kwargs): fractions become floats."""
    if isinstance(value, str) and (_FRACTION.match(value) or _SCI.match(value)):
        return parse_float(value)
    if isinstance(value, list):
        return [_normalize_free(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _normalize_free(v) for k, v in value.items()}
    return value


def _build(cls: Any, data: Any, prefix: str) -> Any:
    where = prefix or "the configuration"
    if cls is ObjectiveConfig:
        return _build_objective(data, prefix)
    if cls is CallbackConfig and isinstance(data, str):
        data = {"name": data}
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a mapping of keys to values, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in fields:
            if cls in (ModelConfig, CallbackConfig):  # extra keys go to kwargs
                extra[str(k)] = _normalize_free(v)
                continue
            raise ConfigError(f"unknown key {key!r}; allowed keys in {where}: {', '.join(fields)}")
        kwargs[k] = _coerce(v, hints[k], key, fields[k].metadata)
    if extra:
        kwargs["kwargs"] = {**kwargs.get("kwargs", {}), **extra}
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}: missing required key {', '.join(missing)}")
    return cls(**kwargs)


def _build_objective(data: Any, prefix: str) -> ObjectiveConfig:
    if isinstance(data, str):
        data = {"name": data}
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix}: must be a mapping with a name, got {data!r}")
    data = dict(data)
    name = data.pop("name", "standard")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{prefix}.name: must be a non-empty string, got {name!r}")
    if "params" in data and isinstance(data["params"], dict):  # the dataclass layout
        data.update(data.pop("params"))
    return ObjectiveConfig(name=name, params=_normalize_free(data))


def _check_consistency(cfg: Config) -> None:
    """Cross-field checks that one key alone cannot express."""
    if len(cfg.optim.betas) != 2 or not all(0 <= b < 1 for b in cfg.optim.betas):
        raise ConfigError(f"optim.betas: must be two numbers in [0, 1), got {cfg.optim.betas}")
    if cfg.optim.nesterov and (cfg.optim.name != "sgd" or cfg.optim.momentum <= 0):
        raise ConfigError("optim.nesterov: needs optim.name=sgd and optim.momentum > 0")
    ms = cfg.schedule.milestones
    if any(m <= 0 for m in ms) or ms != sorted(ms):
        raise ConfigError(f"schedule.milestones: must be increasing positive epochs, got {ms}")
    if cfg.schedule.warmup_epochs > cfg.train.epochs:
        raise ConfigError(
            f"schedule.warmup_epochs: must be <= train.epochs ({cfg.train.epochs}), "
            f"got {cfg.schedule.warmup_epochs}"
        )
    if cfg.schedule.min_lr > cfg.optim.lr:
        raise ConfigError(f"schedule.min_lr: must be <= optim.lr ({cfg.optim.lr})")
    dev = cfg.train.device
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", dev):
        raise ConfigError(f"train.device: {dev!r} is not allowed; choose auto, cpu, cuda or cuda:N")
    names = [c.name for c in cfg.callbacks]
    if len(set(names)) != len(names):
        raise ConfigError(f"callbacks: each callback may appear once, got {names}")


def config_from_dict(data: dict[str, Any] | None) -> Config:
    """Validate a nested dict (the recipe layout) into a :class:`Config`."""
    cfg = _build(Config, data or {}, "")
    _check_consistency(cfg)
    return cfg


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """Parse ``key=value`` strings (values read as YAML) into (dotted key, value) pairs."""
    out = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. train.epochs=3)")
        key, text = item.split("=", 1)
        key = key.strip()
        if not key or not re.fullmatch(r"[A-Za-z_][\w.\-]*", key):
            raise ConfigError(f"override {item!r}: bad key {key!r}")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        out.append((key, value))
    return out


def apply_overrides(data: dict[str, Any], overrides: list[tuple[str, Any]]) -> dict[str, Any]:
    """Return a copy of the recipe dict with dotted-key overrides applied (not yet validated).

    Keys are checked against the schema here so that a typo names the key and the allowed
    keys; objective, model and callback-kwargs sections accept any new key.
    """
    data = copy.deepcopy(data)
    for key, value in overrides:
        parts = key.split(".")
        node: dict[str, Any] = data
        cls: Any = Config
        for i, part in enumerate(parts):
            here = ".".join(parts[: i + 1])
            if cls is not None:
                names = [f.name for f in dataclasses.fields(cls)]
                if cls is ObjectiveConfig:
                    cls = None
                elif part not in names and cls not in (ModelConfig,):
                    where = ".".join(parts[:i]) or "the configuration"
                    raise ConfigError(
                        f"unknown key {here!r}; allowed keys in {where}: {', '.join(names)}"
                    )
                elif part in names:
                    hint = typing.get_type_hints(cls)[part]
                    cls = _dataclass_of(hint)
                else:
                    cls = None
            if i == len(parts) - 1:
                node[part] = value
            else:
                child = node.get(part)
                if child is None:
                    child = {}
                elif not isinstance(child, dict):
                    raise ConfigError(f"override {key!r}: {here!r} is not a section")
                node[part] = child
                node = child
    return data


def _dataclass_of(tp: Any) -> Any:
    if dataclasses.is_dataclass(tp):
        return tp
    for a in typing.get_args(tp):
        if dataclasses.is_dataclass(a):
            return a
    return None


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    check: bool = True,
) -> Config:
    """Read a recipe (or start from defaults), apply ``key=value`` overrides, validate.

    With ``check`` the objective's hyperparameters are validated by the objective itself.
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = resolve_recipe(path)  # recipes/... also names the recipes shipped with robustlab
        if not p.is_file():
            raise ConfigError(f"recipe not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"recipe {p} is not valid YAML: {e}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"recipe {p} must be a mapping of sections, got {type(loaded)}")
        data = loaded or {}
    data = apply_overrides(data, parse_overrides(list(overrides or [])))
    cfg = config_from_dict(data)
    if check:
        check_objective(cfg)
    return cfg


def check_objective(cfg: Config) -> Any:
    """Build the configured objective once so that its own dataclass validates the
    hyperparameters; returns it. Errors become :class:`ConfigError` naming ``objective``."""
    from robustlab.errors import RobustlabError
    from robustlab.objectives import create_objective

    try:
        return create_objective(cfg.objective.name, **cfg.objective.params)
    except ConfigError:
        raise
    except RobustlabError as e:
        raise ConfigError(f"objective: {e}") from None
    except TypeError as e:
        raise ConfigError(f"objective {cfg.objective.name!r}: {e}") from None
