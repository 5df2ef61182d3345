"""The published TRADES SmallCNN on the first 1,000 MNIST test images, in CI.

Its authors report 96.07% robust accuracy under 40-step PGD (eps 0.3, step 0.01) on the full
test set. AutoAttack ``standard`` runs its attacks in order, each on the points still robust,
and keeps the per-sample worst case, so its robust accuracy is at most that after its first
attack (APGD-CE, 100 steps). The full ensemble on 1,000 points takes about an hour on one CPU
core (tests/test_attacks_trades.py, marked slow); here the bound through its first stage shows
it strictly stronger than PGD-40 on the same images.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from robustlab.attacks import PGD, AutoAttack
from robustlab.attacks.autoattack import PRESETS
from robustlab.data import load_split
from robustlab.models import create_model, load_checkpoint


@pytest.fixture(scope="module")
def trades_1000(trades_checkpoint: Path, shared_data: Path):
    model = create_model("smallcnn", dataset="mnist")
    load_checkpoint(model, trades_checkpoint)
    model.eval()
    split = load_split("mnist", "test", root=shared_data)
    x = split.images[:1000].float() / 255.0
    y = split.labels[:1000].long()
    attack = PGD(eps=0.3, steps=40, step_size=0.01, random_start=True)
    x_pgd = torch.cat([attack(model, x[s : s + 250], y[s : s + 250]) for s in range(0, 1000, 250)])
    with torch.no_grad():
        pgd_acc = float((model(x_pgd).argmax(1) == y).float().mean())
    return model, x, y, pgd_acc


def test_pgd40_on_first_1000_matches_published(trades_1000) -> None:
    *_, pgd_acc = trades_1000
    assert 0.94 <= pgd_acc <= 0.97, pgd_acc


def test_autoattack_standard_first_stage_already_beats_pgd40(trades_1000) -> None:
    model, x, y, pgd_acc = trades_1000
    first = PRESETS["standard"][0]
    assert first[0] == "apgd-ce" and first[1]["steps"] == 100
    stage = AutoAttack(eps=0.3, attacks=[first], batch_size=500).run(model, x, y)
    with torch.no_grad():
        adv_acc = float((model(stage.x_adv).argmax(1) == y).float().mean())
    assert stage.robust_accuracy == pytest.approx(adv_acc)
    # AutoAttack standard <= its first stage < PGD-40
    assert stage.robust_accuracy < pgd_acc, (stage.robust_accuracy, pgd_acc)
