"""Boundary dynamics of training batches (robustlab.analysis.batch_dynamics): the D4 check on a
small smooth model, exact vs mean velocities, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from robustlab.analysis.batch_dynamics import batch_dynamics, speed_agreement, speed_check
from robustlab.analysis.dynamics import boundary_speed, objective_velocity
from robustlab.analysis.margins import minimum_margins
from robustlab.attacks.threat import make_threat
from robustlab.errors import RobustlabError


def _smooth_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(20, 16), nn.Tanh(), nn.Linear(16, 3))


def _data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = 0.3 + 0.4 * torch.rand(n, 1, 4, 5, generator=g)
    return x, torch.randint(0, 3, (n,), generator=g)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_d4_closed_form_speed_matches_one_real_sgd_step(norm: str) -> None:
    """D4 on a small smooth model: verified margins before and after one torch.optim.SGD step."""
    model = _smooth_mlp()
    x, _ = _data(32)
    with torch.no_grad():
        y = model(x).argmax(1)  # every point correct: all have a margin
    _, y_train = _data(32, seed=1)
    x64 = x.double()

    def loss_fn(m: nn.Module) -> torch.Tensor:
        return nn.functional.cross_entropy(m(x64), y_train)

    res = speed_check(model, loss_fn, x, y, norm=norm, lr=1e-3, margin_steps=60)
    assert res["n"] >= 28  # a few points may change class or lose verification
    # Tanh is smooth and lr small: the first-order prediction is within a few percent.
    assert res["pearson"] > 0.99 and res["spearman"] > 0.95
    assert res["median_rel_error"] < 0.05
    # No coordinate of x^ is clipped here, so the box-aware speed is the same formula.
    assert res["box"]["pearson"] > 0.99 and res["box"]["median_rel_error"] < 0.05
    assert np.nanmax(np.abs(res["finite_difference"])) > 1e-2  # the step moved the boundary
    assert model[1].weight.dtype == torch.float32 and model[1].weight.grad is None


def test_speed_agreement_detects_a_wrong_sign() -> None:
    c = np.array([1.0, 2.0, -1.0, 0.5])
    assert speed_agreement(c, c)["median_rel_error"] == 0.0
    bad = speed_agreement(-c, c)
    assert bad["pearson"] < -0.99 and bad["median_rel_error"] == pytest.approx(2.0)
    with pytest.raises(RobustlabError, match="at least 3"):
        speed_agreement(c[:2], c[:2])
    loose = speed_agreement(c[:2], c[:2], strict=False)
    assert loose["n"] == 2 and math.isnan(loose["pearson"])


def _ce(m, xb, yb, index, state):  # the objective call signature  # noqa: ANN001, ANN202
    return nn.functional.cross_entropy(m(xb), yb), {}


def test_exact_velocity_is_each_batchs_own_update_and_mean_is_their_average() -> None:
    model = _smooth_mlp(1)
    batches = []
    for s in (2, 3):
        x, y = _data(12, seed=s)
        with torch.no_grad():
            y[3:] = model(x[3:]).argmax(1)  # most points correct, a few labels random
        batches.append((x, y))
    eps = 0.2
    out = batch_dynamics(model, {"ce": _ce}, batches, eps, velocity="exact", margin_steps=40)
    mean = batch_dynamics(model, {"ce": _ce}, batches, eps, velocity="mean", margin_steps=40)
    assert out["velocity"] == "exact" and mean["velocity"] == "mean"
    np.testing.assert_array_equal(out["margin"], mean["margin"])  # the same points and margins
    threat = make_threat("linf", eps)
    vs = [objective_velocity(model, _ce, x, y, seed=i) for i, (x, y) in enumerate(batches)]
    vbar = {k: (vs[0][k] + vs[1][k]) / 2 for k in vs[0]}
    x, y = batches[1]
    m = minimum_margins(model, x, y, steps=40, eps_hint=eps)
    ok = m["verified"] & m["correct"]
    assert ok.sum() >= 5  # correct points whose boundary lies inside the box
    own = boundary_speed(model, m["x_hat"][ok], y[ok], vs[1], threat)["speed"].double().numpy()
    avg = boundary_speed(model, m["x_hat"][ok], y[ok], vbar, threat)["speed"].double().numpy()
    got = out["objectives"]["ce"]["speed"][12:][ok.numpy()]
    got_mean = mean["objectives"]["ce"]["speed"][12:][ok.numpy()]
    np.testing.assert_allclose(got, own, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(got_mean, avg, rtol=1e-5, atol=1e-8)
    assert not np.allclose(own, avg)  # the two modes differ
    assert "kept" not in out["objectives"]["ce"]  # only margin objectives (DyART) keep points
    s = out["objectives"]["ce"]["stats"]
    assert s["n"] == int(np.isfinite(out["objectives"]["ce"]["speed"]).sum())
    assert math.isclose(s["frac_negative_speed"] + s["frac_positive_speed"], 1.0)


def test_batch_dynamics_rejects_bad_input() -> None:
    model, b = _smooth_mlp(), [_data(4)]
    with pytest.raises(RobustlabError, match="velocity must be one of exact, mean"):
        batch_dynamics(model, {"ce": _ce}, b, 0.1, velocity="ema")
    with pytest.raises(RobustlabError, match="at least one batch"):
        batch_dynamics(model, {"ce": _ce}, [], 0.1)
    with pytest.raises(RobustlabError, match="at least one objective"):
        batch_dynamics(model, {}, b, 0.1)
