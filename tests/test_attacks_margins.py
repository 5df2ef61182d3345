"""Minimum-norm margins: exact on linear models, verified points, flags, and the accuracy
curve."""

from __future__ import annotations

import math

import pytest
import torch
from attack_models import linear_model
from torch import nn

from robustlab.attacks.fab import FAB
from robustlab.attacks.margins import minimum_norm_margins, robust_accuracy_curve
from robustlab.errors import RobustlabError


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 24), nn.ReLU(), nn.Linear(24, 4)).eval()


@pytest.mark.parametrize("norm,q", [("linf", 1.0), ("l2", 2.0)])
def test_linear_margins_are_exact(norm: str, q: float) -> None:
    m = linear_model(30, 4, seed=1)
    x = 0.5 + 0.01 * torch.randn(
        9, 30, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    with torch.no_grad():
        z = m(x)
    y = z.argmax(1)
    res = minimum_norm_margins(m, x, y, norm=norm, steps=40, batch_size=4)
    w = m.weight.detach()
    diff = (z.gather(1, y[:, None]) - z).detach()
    wn = torch.linalg.vector_norm(w[y][:, None, :] - w[None], ord=q, dim=2)
    ref = (diff / wn).scatter(1, y[:, None], math.inf).amin(1)
    assert bool(res.found.all()) and bool(res.correct.all())
    assert torch.allclose(res.margin, ref, rtol=1e-4)


def test_margins_verified_flags_and_modes() -> None:
    m = mlp()
    m.train()
    x = torch.rand(24, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    m.eval()
    with torch.no_grad():
        pred = m(x).argmax(1)
    m.train()
    y = pred.clone()
    y[:3] = (pred[:3] + 1) % 4  # misclassified
    res = minimum_norm_margins(m, x, y, norm="l2", steps=30, batch_size=10, seed=0)
    assert m.training and all(p.grad is None for p in m.parameters())
    assert torch.equal(res.correct, pred == y)
    assert bool((res.margin[:3] == 0).all()) and bool(res.found[:3].all())
    assert torch.equal(res.x_boundary[:3], x[:3])
    m.eval()
    with torch.no_grad():
        new_pred = m(res.x_boundary).argmax(1)
    ok = res.found & res.correct
    assert bool(ok.any())
    assert bool((new_pred[ok] != y[ok]).all())  # every found point changes the prediction
    d = torch.linalg.vector_norm((res.x_boundary - x).flatten(1), dim=1)
    assert torch.allclose(res.margin[res.found], d[res.found])
    assert bool(((res.x_boundary >= 0) & (res.x_boundary <= 1)).all())
    # batching does not change the result (deterministic first start)
    whole = minimum_norm_margins(m, x, y, norm="l2", steps=30, batch_size=64, seed=0)
    assert torch.allclose(whole.margin, res.margin, rtol=1e-4)


def test_nothing_found_is_inf_and_flagged() -> None:
    m = mlp(2)
    x = torch.rand(5, 1, 6, 6, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = m(x).argmax(1)
    res = minimum_norm_margins(m, x, y, steps=0)  # no iterations: nothing can be found
    assert not bool(res.found.any())
    assert bool(torch.isinf(res.margin).all())
    assert torch.equal(res.x_boundary, x)
    curve = robust_accuracy_curve(res.margin, [0.0, 0.5, 1.0])
    assert torch.equal(curve, torch.ones(3, dtype=torch.float64))


def test_curve_matches_fab_attack_and_is_non_increasing() -> None:
    m = mlp(4)
    x = torch.rand(30, 1, 6, 6, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        y = m(x).argmax(1)
    y[:2] = (y[:2] + 1) % 4
    res = minimum_norm_margins(m, x, y, norm="linf", steps=30)
    grid = torch.linspace(0, float(res.margin[res.found].max()) * 1.1, 12)
    curve = robust_accuracy_curve(res.margin, grid)
    assert bool((curve[1:] <= curve[:-1]).all())
    expect = torch.tensor([float((res.margin > e).double().mean()) for e in grid.tolist()])
    assert torch.allclose(curve, expect.double())
    assert float(curve[0]) == pytest.approx(float(res.correct.double().mean()))
    assert float(curve[-1]) == 0.0
    # the eps-bounded FAB attack with the same solver settings agrees at a middle eps
    eps = float(res.margin[res.correct].median())
    x_adv = FAB(eps=eps, norm="linf", steps=30)(m, x, y)
    with torch.no_grad():
        robust = (m(x_adv).argmax(1) == y).double().mean()
    assert float(robust) == pytest.approx(float(robust_accuracy_curve(res.margin, [eps])[0]))


def test_curve_and_margin_errors() -> None:
    with pytest.raises(RobustlabError, match="non-negative"):
        robust_accuracy_curve(torch.tensor([0.1, float("nan")]), [0.1])
    with pytest.raises(RobustlabError, match="non-negative"):
        robust_accuracy_curve(torch.tensor([-0.1]), [0.1])
    with pytest.raises(RobustlabError, match="no margins"):
        robust_accuracy_curve(torch.tensor([]), [0.1])
    m = mlp()
    x, y = torch.rand(2, 1, 6, 6), torch.tensor([0, 1])
    with pytest.raises(RobustlabError, match="unknown norm"):
        minimum_norm_margins(m, x, y, norm="l3")
    with pytest.raises(RobustlabError, match="batch_size"):
        minimum_norm_margins(m, x, y, batch_size=0)
    with pytest.raises(RobustlabError, match="labels"):
        minimum_norm_margins(m, x, torch.tensor([0, 7]))
