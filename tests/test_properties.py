"""Property tests (hypothesis): the threat models' projections and the attack contract on random
small models and inputs.

Every property is checked on a few drawn cases (``max_examples`` small, ``deadline=None``: the
machine is shared, timing is never a property) so the file stays a few seconds in CI.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from robustlab.attacks import create_attack, make_threat

FAST = settings(max_examples=25, deadline=None, derandomize=True)
SLOW = settings(max_examples=6, deadline=None, derandomize=True)

norms = st.sampled_from(["linf", "l2", "l1"])
seeds = st.integers(0, 2**16)
epss = st.floats(0.01, 2.0)


def _points(seed: int, n: int, d: int, spread: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A clean batch in [0, 1] (some coordinates exactly on the box) and far-away targets."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g, dtype=torch.float64)
    x[:, : d // 4] = x[:, : d // 4].round()  # coordinates on the faces of the box
    a = x + spread * torch.randn(n, d, generator=g, dtype=torch.float64)
    return x, a


@FAST
@given(norm=norms, seed=seeds, eps=epss, spread=st.floats(0.0, 5.0))
def test_projection_stays_in_ball_and_box_and_is_idempotent(norm, seed, eps, spread) -> None:
    x, a = _points(seed, 5, 12, spread)
    t = make_threat(norm, eps)
    p = t.project(a, x)
    # exact: clamping can only produce values in [0, 1]
    assert float(p.min()) >= 0.0 and float(p.max()) <= 1.0
    # 1e-12: float64 rounding of the norm of a 12-vector of size <= 10 (a few ulps of 1e-15)
    assert bool((t.distance(p, x) <= eps + 1e-12).all())
    torch.testing.assert_close(t.project(p, x), p, rtol=0, atol=1e-12)  # idempotent
    assert torch.equal(t.project(x, x), x)  # the clean point is its own projection


@FAST
@given(norm=norms, seed=seeds, eps=epss, spread=st.floats(0.0, 5.0))
def test_ball_projection_is_the_closest_point_of_the_ball(norm, seed, eps, spread) -> None:
    x, a = _points(seed, 4, 10, spread)
    t = make_threat(norm, eps)
    delta = t.project_ball(a - x)
    g = torch.Generator().manual_seed(seed + 1)
    # any other point of the ball is at least as far (Euclidean metric of the projection);
    # 1e-12 covers float64 rounding of distances of size <= 20
    for _ in range(10):
        other = t.project_ball(t.sample_ball(x, g) * 1.5)
        assert bool(((a - x - delta).norm(dim=1) <= (a - x - other).norm(dim=1) + 1e-12).all())


@FAST
@given(seed=seeds, eps=epss, spread=st.floats(0.0, 5.0))
def test_linf_projection_is_the_closest_point_of_ball_and_box(seed, eps, spread) -> None:
    """Linf ball and box are both coordinate-wise intervals: the closest point of their
    intersection clamps each coordinate to [max(x - eps, 0), min(x + eps, 1)]."""
    x, a = _points(seed, 4, 10, spread)
    p = make_threat("linf", eps).project(a, x)
    expect = torch.minimum(torch.maximum(a, (x - eps).clamp_min(0)), (x + eps).clamp_max(1))
    assert torch.equal(p, expect)


@FAST
@given(norm=norms, seed=seeds, eps=epss)
def test_random_start_and_steps_never_leave_the_box(norm, seed, eps) -> None:
    x, a = _points(seed, 4, 10, 1.0)
    t = make_threat(norm, eps)
    g = torch.Generator().manual_seed(seed)
    z = t.random_start(x.float(), g)
    assert float(z.min()) >= 0.0 and float(z.max()) <= 1.0
    stepped = t.project(t.step(z, (a - x).float(), 3.0), x.float())
    assert float(stepped.min()) >= 0.0 and float(stepped.max()) <= 1.0


class _Net(nn.Module):
    """A random small CNN with BatchNorm and dropout (its modes must be restored)."""

    def __init__(self, seed: int, classes: int, width: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.Dropout(0.3)
        )
        self.head = nn.Linear(width * 36, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).flatten(1))


ATTACKS = {
    "fgsm": {},
    "pgd": {"steps": 3},
    "apgd-ce": {"steps": 4},
    "apgd-t": {"steps": 3, "n_targets": 1},
    "fab": {"steps": 3},
    "square": {"n_queries": 10},
}


@SLOW
@given(
    attack=st.sampled_from(sorted(ATTACKS)),
    norm=st.sampled_from(["linf", "l2"]),
    seed=seeds,
    classes=st.integers(2, 5),
    n=st.integers(1, 4),
    eps=st.floats(0.01, 0.5),
)
def test_attack_contract_on_random_models(attack, norm, seed, classes, n, eps) -> None:
    model = _Net(seed, classes, width=3).train()
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 6, 6, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    x_in, y_in, state = x.clone(), y.clone(), {k: v.clone() for k, v in model.state_dict().items()}
    try:
        atk = create_attack(attack, eps=eps, norm=norm, seed=seed, **ATTACKS[attack])
    except Exception as e:  # an attack that does not offer this norm says so, clearly
        pytest.skip(f"{attack} {norm}: {e}")
    x_adv = atk(model, x, y)
    assert torch.equal(x, x_in) and torch.equal(y, y_in)  # inputs never mutated
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.grad_fn is None
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    # 1e-5 relative: float32 rounding of a norm over 36 coordinates (~36 ulps of eps)
    assert bool((make_threat(norm, eps).distance(x_adv, x) <= eps * (1 + 1e-5)).all())
    assert model.training and all(m.training for m in model.modules())  # mode restored
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k  # BatchNorm statistics untouched
    again = create_attack(attack, eps=eps, norm=norm, seed=seed, **ATTACKS[attack])(model, x, y)
    assert torch.equal(x_adv, again)  # seeded
