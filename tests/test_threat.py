"""Threat models: projections land on the ball and are the closest point; starts are inside."""

from __future__ import annotations

import math

import pytest
import torch

from robustlab.attacks import make_generator, make_threat, parse_eps
from robustlab.errors import RobustlabError

NORMS = ["linf", "l2", "l1"]


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("per_sample", [False, True])
def test_projection_is_the_closest_point_of_the_ball(norm: str, per_sample: bool) -> None:
    g = torch.Generator().manual_seed(0)
    d = torch.randn(6, 1, 5, 5, generator=g, dtype=torch.float64)
    eps = torch.linspace(0.2, 1.2, 6, dtype=torch.float64) if per_sample else 0.7
    t = make_threat(norm, eps)
    p = t.project_ball(d)
    e = torch.as_tensor(eps, dtype=torch.float64).expand(6)
    n = t.norm(p)
    assert torch.all(n <= e + 1e-9)
    assert torch.allclose(n, torch.minimum(t.norm(d), e))  # outside points land on the sphere
    assert torch.allclose(t.project_ball(p), p)  # idempotent
    # no random point of the ball is closer (in L2, the metric of a Euclidean projection
    # for L2 and L1; for Linf clipping is also the closest point in every Lp)
    for _ in range(20):
        q = t.project_ball(torch.randn(d.shape, generator=g, dtype=torch.float64))
        assert torch.all((d - p).flatten(1).norm(dim=1) <= (d - q).flatten(1).norm(dim=1) + 1e-9)


@pytest.mark.parametrize("norm", NORMS)
def test_random_start_and_project_stay_in_ball_and_box(norm: str) -> None:
    x = torch.rand(8, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    t = make_threat(norm, {"linf": 8 / 255, "l2": 0.5, "l1": 2.0}[norm])
    gen = make_generator(0, "cpu")
    for z in (t.random_start(x, gen), t.project(x + torch.randn_like(x), x)):
        assert float(z.min()) >= 0.0 and float(z.max()) <= 1.0
        assert torch.all(t.distance(z, x) <= t.eps + 1e-6)
    again = t.random_start(x, make_generator(0, "cpu"))
    assert torch.equal(again, t.random_start(x, make_generator(0, "cpu")))


@pytest.mark.parametrize("norm", NORMS)
def test_ascent_direction_is_unit_and_steepest(norm: str) -> None:
    grad = torch.randn(4, 10, generator=torch.Generator().manual_seed(2))
    t = make_threat(norm, 1.0)
    u = t.ascent_direction(grad)
    assert torch.allclose(t.norm(u), torch.ones(4))
    # <grad, u> reaches the dual norm of grad: the best first-order gain per unit step
    assert torch.allclose((grad * u).sum(1), t.dual_norm(grad), rtol=1e-5)


def test_bad_threat_inputs() -> None:
    assert parse_eps("8/255") == pytest.approx(8 / 255)
    for bad in ("-1", "0", "nan", "a/b", "1/0"):
        with pytest.raises(RobustlabError):
            parse_eps(bad)
    with pytest.raises(RobustlabError, match="unknown norm"):
        make_threat("l3", 0.1)
    with pytest.raises(RobustlabError):
        make_threat("linf", -0.1)
    with pytest.raises(RobustlabError):
        make_threat("l2", torch.tensor([0.1, math.inf]))


def test_empty_batch_has_empty_norms() -> None:
    """A batch of 0 samples (e.g. no boundary point found in a DyART step) is not an error."""
    from robustlab.objectives.dyart import first_order_aligned

    empty = torch.zeros(0, 1, 28, 28)
    for norm in ("linf", "l2", "l1"):
        t = make_threat(norm, 0.3)
        assert t.norm(empty).shape == (0,) and t.dual_norm(empty).shape == (0,)
    assert first_order_aligned(empty, empty).shape == (0,)
