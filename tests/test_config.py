"""The typed configuration: recipes, overrides, and errors that name the key and allowed values."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from robustlab.config import (
    Config,
    apply_overrides,
    check_objective,
    config_from_dict,
    load_config,
    parse_float,
    parse_overrides,
)
from robustlab.errors import ConfigError, RobustlabError

REPO = Path(__file__).resolve().parents[1]


def test_defaults_roundtrip_through_yaml() -> None:
    cfg = load_config(None, ["objective.name=pgd_at", "objective.eps=8/255", "model.width=2"])
    again = config_from_dict(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg
    assert cfg.objective.params["eps"] == pytest.approx(8 / 255)
    assert cfg.model.kwargs == {"width": 2}


def test_overrides_are_typed() -> None:
    cfg = load_config(
        None,
        [
            "train.epochs=3",
            "optim.lr=1e-3",
            "optim.name=AdamW",
            "validation.attack.eps=8/255",
            "schedule.milestones=[1, 2.5]",
            "train.channels_last=true",
            "validation.attack=null",
            "data.n_train=100",
        ],
        check=False,
    )
    assert cfg.train.epochs == 3 and isinstance(cfg.train.epochs, int)
    assert cfg.optim.lr == pytest.approx(1e-3) and cfg.optim.name == "adamw"
    assert cfg.schedule.milestones == [1.0, 2.5]
    assert cfg.train.channels_last is True
    assert cfg.validation.attack is None
    assert cfg.data.n_train == 100


def test_parse_float_fractions() -> None:
    assert parse_float("8/255") == pytest.approx(8 / 255)
    assert parse_float(" 0.3 ") == 0.3
    assert parse_float(2) == 2.0
    for bad in ("abc", "1/0", True, None, [1]):
        with pytest.raises(ConfigError):
            parse_float(bad, "x")


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        ("train.epochz=3", ["train.epochz", "epochs", "ema_decay"]),
        ("trian.epochs=3", ["trian", "train", "optim"]),
        ("data.augment.rotate=1", ["data.augment.rotate", "crop_padding", "hflip"]),
        ("optim.name=rmsprop", ["optim.name", "rmsprop", "sgd", "adam", "adamw"]),
        ("schedule.name=step", ["schedule.name", "multistep", "cosine", "onecycle"]),
        ("train.amp=fp8", ["train.amp", "bf16", "fp16"]),
        ("validation.attack.norm=l3", ["validation.attack.norm", "linf", "l2"]),
        ("validation.select=worst", ["validation.select", "robust", "clean"]),
        ("train.epochs=0", ["train.epochs", "> 0"]),
        ("train.epochs=2.5", ["train.epochs", "integer"]),
        ("optim.lr=-0.1", ["optim.lr", "> 0"]),
        ("optim.lr=fast", ["optim.lr", "number"]),
        ("optim.momentum=1.5", ["optim.momentum", "< 1"]),
        ("train.ema_decay=1", ["train.ema_decay", "< 1"]),
        ("validation.attack.eps=-8/255", ["validation.attack.eps", "> 0"]),
        ("train.device=tpu", ["train.device", "cpu", "cuda"]),
        ("train.progress=maybe", ["train.progress", "true or false"]),
        ("optim.betas=[0.9]", ["optim.betas"]),
        ("schedule.milestones=[3,1]", ["schedule.milestones", "increasing"]),
        ("optim.nesterov=true optim.momentum=0", ["optim.nesterov"]),
        ("train.epochs", ["key=value"]),
    ],
)
def test_bad_values_name_key_and_allowed(override: str, needles: list[str]) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, override.split(), check=False)
    msg = str(e.value)
    for n in needles:
        assert n in msg, (n, msg)


def test_unknown_recipe_key_and_bad_section(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text("name: x\noptim: {name: sgd, learning_rate: 0.1}\n")
    with pytest.raises(ConfigError, match=r"optim.learning_rate.*lr"):
        load_config(p, check=False)
    p.write_text("data: 3\n")
    with pytest.raises(ConfigError, match="data"):
        load_config(p, check=False)
    p.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(p, check=False)
    p.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_config(p, check=False)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        (["objective.name=adversarial"], r"unknown objective 'adversarial'.*pgd_at"),
        (["objective.name=pgd_at", "objective.eps=-0.3"], r"eps.*positive"),
        (["objective.name=pgd_at", "objective.eps=0"], r"eps.*positive"),
        (["objective.name=trades", "objective.beta=-1"], r"beta"),
        (["objective.name=pgd_at", "objective.epsilon=0.3"], r"epsilon.*allowed"),
    ],
)
def test_objective_hyperparameters_validated(overrides: list[str], pattern: str) -> None:
    with pytest.raises(RobustlabError, match=pattern):
        load_config(None, overrides)


def test_callbacks_accept_names_and_mappings() -> None:
    cfg = config_from_dict({"callbacks": ["logits", {"name": "fisher", "every": 2, "n": 100}]})
    assert [c.name for c in cfg.callbacks] == ["logits", "fisher"]
    assert cfg.callbacks[1].every == 2 and cfg.callbacks[1].kwargs == {"n": 100}
    with pytest.raises(ConfigError, match="once"):
        config_from_dict({"callbacks": ["logits", "logits"]})


def test_apply_overrides_does_not_mutate() -> None:
    base = {"train": {"epochs": 1}}
    out = apply_overrides(base, parse_overrides(["train.epochs=2", "objective.beta=6"]))
    assert base == {"train": {"epochs": 1}}
    assert out["train"]["epochs"] == 2 and out["objective"]["beta"] == 6


def test_every_shipped_recipe_is_valid() -> None:
    recipes = sorted((REPO / "recipes").rglob("*.yaml"))
    assert any(r.name == "standard.yaml" for r in recipes)
    assert any(r.name == "pgd_at.yaml" for r in recipes)
    for r in recipes:
        cfg = load_config(r, check=False)
        assert isinstance(cfg, Config), r
        try:
            check_objective(cfg)
        except ConfigError as e:  # a teacher checkpoint produced by another recipe's run
            assert "not found" in str(e), (r, e)
