"""Validation of plain dicts (recipe YAML) into the typed :class:`Config`.

One job: walk the schema's type hints and field bounds; unknown keys raise
:class:`~robustlab.errors.ConfigError` naming the key and the allowed keys, bad values name the
key and the allowed values. Floats accept fractions such as ``"8/255"``
(:func:`robustlab.values.parse_number`).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from typing import Any, Literal, Union

from robustlab.config.schema import CallbackConfig, Config, ModelConfig, ObjectiveConfig
from robustlab.errors import ConfigError
from robustlab.values import looks_numeric, parse_number

__all__ = ["config_from_dict", "parse_float"]


def parse_float(value: Any, key: str = "value") -> float:
    """A float from a number or a string such as ``"0.3"`` or ``"8/255"``."""
    try:
        return parse_number(value)
    except ValueError:
        raise ConfigError(f"{key}: expected a number (e.g. 0.3 or 8/255), got {value!r}") from None


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
    if isinstance(value, str) and looks_numeric(value):
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
    _check_momentum_cycle(cfg)
    dev = cfg.train.device
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", dev):
        raise ConfigError(f"train.device: {dev!r} is not allowed; choose auto, cpu, cuda or cuda:N")
    _check_input_norm(cfg.model.input_norm)
    _check_eps_scales(cfg)
    names = [c.name for c in cfg.callbacks]
    if len(set(names)) != len(names):
        raise ConfigError(f"callbacks: each callback may appear once, got {names}")


def _check_momentum_cycle(cfg: Config) -> None:
    """``cyclic`` rises over ``pct_start`` (no separate warm-up); ``schedule.base_momentum``
    cycles SGD's momentum against a one-cycle or cyclic lr."""
    if cfg.schedule.name == "cyclic" and cfg.schedule.warmup_epochs > 0:
        raise ConfigError(
            "schedule.warmup_epochs: cyclic rises over schedule.pct_start of training; set "
            "warmup_epochs to 0"
        )
    base = cfg.schedule.base_momentum
    if base is None:
        return
    if cfg.schedule.name not in ("onecycle", "cyclic"):
        raise ConfigError(
            f"schedule.base_momentum: needs schedule.name onecycle or cyclic, got "
            f"{cfg.schedule.name!r}"
        )
    if cfg.optim.name != "sgd":
        raise ConfigError(f"schedule.base_momentum: cycles SGD's momentum; optim.name is "
                          f"{cfg.optim.name!r}")  # fmt: skip
    if base > cfg.optim.momentum:
        raise ConfigError(
            f"schedule.base_momentum: must be <= optim.momentum ({cfg.optim.momentum}), got {base}"
        )


def config_from_dict(data: dict[str, Any] | None) -> Config:
    """Validate a nested dict (the recipe layout) into a :class:`Config`."""
    cfg = _build(Config, data or {}, "")
    _check_consistency(cfg)
    return cfg


def _check_input_norm(value: str) -> None:
    """``model.input_norm``: auto, dataset, none, or an even count of numbers (MEAN,STD)."""
    text = value.strip().lower()
    if text in ("auto", "dataset", "none"):
        return
    parts = text.split(",")
    try:
        [float(v) for v in parts]
    except ValueError:
        parts = ["?"]
    if len(parts) % 2 == 0:
        return
    raise ConfigError(
        f"model.input_norm: {value!r} is not allowed; choose auto, dataset, none or MEAN,STD "
        "(e.g. 0.1307,0.3081)"
    )


def _check_eps_scales(cfg: Config) -> None:
    """An Linf eps above 1 (``8`` meant as ``8/255``) is refused with a hint."""
    from robustlab.attacks.threat import check_eps_scale
    from robustlab.errors import RobustlabError

    atk = cfg.validation.attack
    checks = []
    params = cfg.objective.params
    if "eps" in params:
        try:
            eps = parse_number(params["eps"])
        except ValueError:
            eps = None  # the objective's own validation names the bad value
        if eps is not None:
            checks.append((eps, str(params.get("norm", "linf")), "objective.eps"))
    if atk is not None:
        checks.append((atk.eps, atk.norm, "validation.attack.eps"))
    for eps, norm, key in checks:
        try:
            check_eps_scale(eps, norm, key)
        except RobustlabError as e:
            raise ConfigError(str(e)) from None
