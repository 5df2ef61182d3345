"""Recipes and overrides: recipe YAML + ``key=value`` overrides -> a validated ``Config``.

One job: read, override, validate and compare configurations (``config_diff``: which keys
differ between a stored run's configuration and a given one). The ``objective`` section is a
name plus free hyperparameters, validated by the objective's own dataclass
(:func:`check_objective`).
"""

from __future__ import annotations

import copy
import dataclasses
import re
import typing
from pathlib import Path
from typing import Any

import yaml

from robustlab.config.build import config_from_dict
from robustlab.config.schema import Config, ModelConfig, ObjectiveConfig
from robustlab.errors import ConfigError
from robustlab.resources import resolve_recipe
from robustlab.values import parse_number

__all__ = [
    "load_config",
    "apply_overrides",
    "parse_overrides",
    "check_objective",
    "config_diff",
    "check_same_config",
]


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
    pairs = parse_overrides(list(overrides or []))
    data = follow_objective_eps(data, apply_overrides(data, pairs), {k for k, _ in pairs})
    cfg = config_from_dict(data)
    if check:
        check_objective(cfg)
    return cfg


def follow_objective_eps(
    recipe: dict[str, Any], data: dict[str, Any], overridden: set[str]
) -> dict[str, Any]:
    """An ``objective.eps=...`` override also moves the validation attack's eps (and scales an
    explicit step size with it), unless ``validation.attack.eps`` is overridden too or the
    recipe gave the validation attack an eps of its own (different from the objective's)."""
    if "objective.eps" not in overridden or "validation.attack.eps" in overridden:
        return data
    val = data.get("validation")
    if val is None:
        val = data["validation"] = {}
    if not isinstance(val, dict) or ("attack" in val and not isinstance(val["attack"], dict)):
        return data  # no validation attack (attack: null): nothing to follow
    attack = val.setdefault("attack", {})
    old_obj = (recipe.get("objective") or {}).get("eps")
    old_val = attack.get("eps")
    try:
        new = parse_number(data["objective"]["eps"])
        before = parse_number(old_val) if old_val is not None else None
        if before is not None and (old_obj is None or parse_number(old_obj) != before):
            return data  # the recipe chose the validation eps on purpose
    except (ValueError, KeyError, TypeError):
        return data  # a bad value: the schema reports it with its key
    if not new > 0:
        return data  # the objective's own validation names the bad objective.eps
    attack["eps"] = new
    step = attack.get("step_size")
    if step is not None and before and "validation.attack.step_size" not in overridden:
        try:
            attack["step_size"] = parse_number(step) * new / before
        except ValueError:
            pass
    return data


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


# Keys that may differ between a stored run configuration and the one given with --resume.
RESUMABLE_DIFFS = frozenset(
    {"train.progress", "train.device", "train.log_every", "train.tensorboard"}
)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k not in ("kwargs",):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_diff(
    a: Config, b: Config, ignore: frozenset[str] | set[str] = frozenset()
) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (value in a, value in b)}`` for every key where the two differ."""
    fa, fb = _flatten(a.to_dict()), _flatten(b.to_dict())
    keys = sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k) and k not in ignore)
    return {k: (fa.get(k), fb.get(k)) for k in keys}


def check_same_config(stored: Config, given: Config, run_dir: Path) -> None:
    """``--resume``: the given configuration must equal the stored one (up to
    ``RESUMABLE_DIFFS``)."""
    diff = config_diff(stored, given, RESUMABLE_DIFFS)
    if diff:
        shown = ", ".join(f"{k} ({a!r} -> {b!r})" for k, (a, b) in list(diff.items())[:5])
        raise ConfigError(
            f"cannot resume {run_dir}: the configuration differs from the stored one in {shown}"
        )
