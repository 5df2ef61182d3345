"""Every recipe in recipes/ parses, validates against the config and names a real objective;
each CPU objective recipe trains end to end on 128 images for two epochs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from robustlab.config import load_config
from robustlab.objectives import available_objectives

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").glob("*/*.yaml"))


def teacher_overrides(path: Path, checkpoint: Path) -> list[str]:
    """Distillation recipes point at runs that may not exist yet: use a real checkpoint."""
    if "distill" not in path.name:
        return []
    return [f"objective.teacher={checkpoint}", f"objective.std_teacher={checkpoint}"]


def test_there_is_a_cpu_and_a_paper_recipe_for_every_objective() -> None:
    for folder in ("cpu", "paper"):
        names = {
            yaml.safe_load(p.read_text())["objective"]["name"]
            for p in RECIPES
            if p.parent.name == folder
        }
        for obj in (
            "standard",
            "pgd_at",
            "fast_at",
            "trades",
            "mart",
            "fisher",
            "distill",
            "dyart",
        ):
            assert obj in names, f"no recipes/{folder} recipe for {obj}"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recipe_parses_and_validates(path: Path, trades_checkpoint: Path) -> None:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(raw, dict) and "objective" in raw
    cfg = load_config(path, teacher_overrides(path, trades_checkpoint), check=True)
    assert cfg.objective.name in available_objectives()
    assert path.stem.startswith(cfg.objective.name), "recipes are named after their objective"
    assert path.read_text(encoding="utf-8").startswith("#"), "a recipe starts with a comment"


TINY = [
    "data.dataset=mnist-mini",
    "data.n_train=128",
    "data.n_val=32",
    "data.batch_size=32",
    "train.epochs=2",
    "train.progress=false",
    "train.log_every=0",
    "train.ema_decay=0",
    "validation.n=32",
    "validation.attack.steps=2",
]


OWN_CPU = sorted(
    p.stem for p in RECIPES if p.parent.name == "cpu" and p.stem not in ("standard", "pgd_at")
)


@pytest.mark.parametrize("recipe", OWN_CPU)
def test_cpu_recipe_trains_end_to_end(recipe: str, tmp_path: Path, trades_checkpoint: Path) -> None:
    from robustlab.train import train

    path = REPO / "recipes" / "cpu" / f"{recipe}.yaml"
    over = TINY + teacher_overrides(path, trades_checkpoint)
    if recipe == "distill":
        over += ["objective.teacher_model=smallcnn", "objective.std_teacher_model=smallcnn"]
    if recipe == "dyart":
        over += ["objective.fab_steps=3"]
    run = train(load_config(path, over), tmp_path / recipe)
    summary = json.loads((run / "summary.json").read_text())
    assert summary
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r.get("kind") == "epoch"]
    assert len(epochs) == 2
    if recipe == "dyart":
        assert epochs[0]["train_burn_in"] == 1.0 and epochs[1]["train_burn_in"] == 0.0
        assert "train_kept" in epochs[1]
