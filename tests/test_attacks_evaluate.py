"""robust_evaluate: per-sample records agree with the returned adversarial examples, the
channels_last fast path changes nothing but speed, and the model is left as it was."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks import AutoAttack, create_attack
from robustlab.errors import RobustlabError
from robustlab.evaluate import channels_last, eps_sweep, robust_evaluate


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(F.relu(self.c1(x)), 2)
        h = F.max_pool2d(F.relu(self.c2(h)), 2)
        return self.fc(h.flatten(1)) * 4.0


@pytest.fixture
def data() -> tuple[ConvNet, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = ConvNet()
    x = torch.rand(40, 1, 16, 16)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:5] = (y[:5] + 1) % 5  # a few clean mistakes
    return model, x, y


def test_records_match_adversarial_examples(data) -> None:
    model, x, y = data
    atk = AutoAttack(eps=0.05, attacks=[("pgd", {"steps": 5}), ("apgd-ce", {"steps": 10})])
    ev = robust_evaluate(model, x, y, atk, batch_size=16, keep_adv=True)
    assert ev.n == 40 and ev.x_adv is not None and ev.x_adv.is_contiguous()
    with torch.no_grad():
        robust = model(ev.x_adv).argmax(1) == y
        clean = model(x).argmax(1) == y
    assert [r["robust_correct"] for r in ev.records] == robust.tolist()
    assert [r["clean_correct"] for r in ev.records] == clean.tolist()
    assert ev.robust_accuracy == pytest.approx(float(robust.float().mean()))
    assert ev.clean_accuracy == pytest.approx(0.875)
    for r in ev.records:
        broken = r["clean_correct"] and not r["robust_correct"]
        assert (r["broken_by"] in ("pgd", "apgd-ce")) == broken
        if broken:
            assert 0 < r["perturbation_norm"] <= 0.05 + 1e-6
    s = ev.summary()
    assert s["clean_correct"] == 35 and s["per_attack"][0]["attack"] == "pgd"
    assert s["robust_correct"] == int(robust.sum())


def test_uint8_inputs_and_eps_sweep(data) -> None:
    model, x, y = data
    xu = (x * 255).round().to(torch.uint8)
    res = eps_sweep(model, xu, y, "pgd", [0.01, 0.05, 0.2], steps=5)
    accs = [r.robust_accuracy for r in res]
    assert accs == sorted(accs, reverse=True) and accs[-1] < accs[0]
    assert [r.eps for r in res] == [0.01, 0.05, 0.2]


def test_channels_last_same_result_and_model_restored(data) -> None:
    model, x, y = data
    atk = create_attack("apgd-ce", eps=0.05, steps=10)
    a = robust_evaluate(model, x, y, atk, use_channels_last=True)
    assert model.c2.weight.is_contiguous()  # restored
    b = robust_evaluate(model, x, y, atk, use_channels_last=False)
    assert a.robust_accuracy == b.robust_accuracy
    model.to(memory_format=torch.channels_last)
    with channels_last(model) as did:
        assert did
    assert not model.c2.weight.is_contiguous()  # a channels_last model stays so


def test_bad_arguments(data) -> None:
    model, x, y = data
    atk = create_attack("pgd", eps=0.1)
    with pytest.raises(RobustlabError, match="lengths must match"):
        robust_evaluate(model, x, y[:-1], atk)
    with pytest.raises(RobustlabError, match="Attack"):
        robust_evaluate(model, x, y, "pgd")
    with pytest.raises(RobustlabError, match=r"\[0, 1\]"):
        robust_evaluate(model, x + 1.0, y, atk)
