"""Gradient-masking sanity checks: each fires on a model built to trigger it, none fires on a
well-behaved model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks.checks import (
    check_determinism,
    check_eps_monotonic,
    check_large_eps,
    check_probabilities,
    check_square_vs_whitebox,
    check_stronger_attack,
    check_zero_gradients,
    run_sanity_checks,
)


class Net(nn.Module):
    """A small linear-ish CNN trained for a few steps on separable blobs."""

    def __init__(self, mode: str = "logits") -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 6 * 6, 4)
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.fc(F.relu(self.conv(x)).flatten(1))
        if self.mode == "softmax":
            return z.softmax(1)
        if self.mode == "noisy":
            return z + torch.randn_like(z)
        if self.mode == "saturated":  # a huge logit scale: CE gradients underflow to 0
            return z * 1e4
        return z


def _data(n: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 4
    x = 0.3 + 0.1 * torch.rand(n, 1, 6, 6, generator=g)
    x[torch.arange(n), 0, y, :] += 0.4  # class k: bright row k
    return x.clamp(0, 1), y


@pytest.fixture(scope="module")
def trained() -> Net:
    torch.manual_seed(0)
    net = Net()
    x, y = _data(200)
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return net


def _with_mode(net: Net, mode: str) -> Net:
    other = Net(mode)
    other.load_state_dict(net.state_dict())
    return other


def test_well_behaved_model_triggers_nothing(trained: Net) -> None:
    x, y = _data()
    with torch.no_grad():
        assert float((trained(x).argmax(1) == y).float().mean()) > 0.9
    results = run_sanity_checks(trained, x, y, eps=0.1, n_points=48)
    names = {r.name for r in results}
    assert {"probability-outputs", "nondeterministic-outputs", "zero-gradients"} <= names
    assert {"eps-monotonic", "large-eps", "stronger-attack-worse"} <= names
    assert [str(r) for r in results if not r.passed] == []


def test_softmax_model_triggers_probability_warning(trained: Net) -> None:
    x, _ = _data()
    r = check_probabilities(_with_mode(trained, "softmax"), x)
    assert not r.passed and "probabilities" in r.message
    assert r.numbers["max_row_sum_deviation"] < 1e-4
    assert check_probabilities(trained, x).passed


def test_stochastic_model_triggers_nondeterminism_warning(trained: Net) -> None:
    x, _ = _data()
    r = check_determinism(_with_mode(trained, "noisy"), x)
    assert not r.passed and r.numbers["max_abs_difference"] > 0.1
    assert check_determinism(trained, x).passed


def test_saturated_model_triggers_zero_gradient_warning(trained: Net) -> None:
    x, y = _data()
    r = check_zero_gradients(_with_mode(trained, "saturated"), x, y)
    assert not r.passed and r.numbers["zero_gradient_fraction"] > 0.5
    assert check_zero_gradients(trained, x, y).passed


def test_run_sanity_checks_reports_each_bad_model(trained: Net) -> None:
    x, y = _data()
    for mode, name in [("softmax", "probability-outputs"), ("noisy", "nondeterministic-outputs")]:
        failed = {
            r.name for r in run_sanity_checks(_with_mode(trained, mode), x, y, 0.1) if not r.passed
        }
        assert name in failed, (mode, failed)


def test_eps_monotonic() -> None:
    assert check_eps_monotonic([0.1, 0.2, 0.3], [0.9, 0.6, 0.2]).passed
    r = check_eps_monotonic([0.3, 0.1, 0.2], [0.5, 0.9, 0.4])
    assert not r.passed and "0.2" in r.message and r.numbers["eps"] == [0.1, 0.2, 0.3]


def test_large_eps_and_stronger_attack_on_good_model(trained: Net) -> None:
    x, y = _data()
    r = check_large_eps(trained, x, y)
    assert r.passed and r.numbers["robust_accuracy"] <= 0.05
    s = check_stronger_attack(trained, x, y, eps=0.15)
    assert s.passed
    assert s.numbers["strong_robust_accuracy"] <= s.numbers["weak_robust_accuracy"] + 0.05


class Flat(nn.Module):
    """Masks gradients: the prediction is a step function of the input (zero gradient)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x.flatten(1).mean(1) > 2.0).float()  # never true in [0, 1]: constant, grad 0
        return torch.stack([1.0 - s, s, s, s], 1) * 5.0 + 0.0 * x.flatten(1).sum(1, keepdim=True)


def test_masked_model_fails_large_eps() -> None:
    x, y = _data()
    y = torch.zeros_like(y)
    r = check_large_eps(Flat(), x, y)
    assert not r.passed and r.numbers["robust_accuracy"] == 1.0


def test_square_beats_whitebox() -> None:
    pa = [
        {"attack": "apgd-ce", "broken": 10},
        {"attack": "apgd-t", "broken": 2},
        {"attack": "square", "broken": 5},
    ]
    r = check_square_vs_whitebox(pa, n=1000)
    assert r is not None and not r.passed and r.numbers["square_broken"] == 5
    pa[2]["broken"] = 1
    assert check_square_vs_whitebox(pa, n=1000).passed
    assert check_square_vs_whitebox(pa[:2], n=1000) is None
