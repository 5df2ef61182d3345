"""FAB boundary solver: exact projections, exact margins of linear models, custom phi,
per-sample independence, FAB / FAB-T attack contract, and agreement with torchattacks' FAB."""

from __future__ import annotations

import copy
import functools
import math

import numpy as np
import pytest
import torch
from attack_models import BNNet, linear_model
from scipy.optimize import linprog, minimize
from torch import nn

import robustlab.attacks.fab as fab_mod
import robustlab.attacks.projection as projection_mod
from robustlab.attacks import create_attack, make_threat
from robustlab.attacks.base import AttackInputError
from robustlab.attacks.fab import (
    FAB,
    FABTargeted,
    boundary_search,
    hard_margin,
    project_hyperplane_box,
)
from robustlab.errors import RobustlabError

DUAL = {"linf": 1.0, "l2": 2.0, "l1": math.inf}


def analytic_margin(m: nn.Linear, x: torch.Tensor, y: torch.Tensor, norm: str) -> torch.Tensor:
    """Distance to the closest pairwise hyperplane z_y = z_l (box inactive)."""
    with torch.no_grad():
        z = m(x)
        w = m.weight
        diff = z.gather(1, y[:, None]) - z
        wn = torch.linalg.vector_norm(w[y][:, None, :] - w[None], ord=DUAL[norm], dim=2)
        return (diff / wn).scatter(1, y[:, None], math.inf).amin(1)


def small_mlp(seed: int = 0, d: int = 20, k: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 32), nn.Tanh(), nn.Linear(32, k)).eval()


# ------------------------------------------------------------------ projection


def _lp_projection(p: np.ndarray, w: np.ndarray, c: float, norm: str) -> float:
    """Minimal norm of delta with w.delta = c, 0 <= p + delta <= 1, by scipy."""
    d = p.size
    bounds = list(zip(-p, 1 - p, strict=True))
    if norm == "linf":  # variables (delta, t): min t, |delta_i| <= t
        cost = np.r_[np.zeros(d), 1.0]
        a_ub = np.block([[np.eye(d), -np.ones((d, 1))], [-np.eye(d), -np.ones((d, 1))]])
        res = linprog(cost, a_ub, np.zeros(2 * d), np.r_[w, 0.0][None], [c], bounds + [(0, None)])
        return float(res.fun)
    if norm == "l1":  # delta = u - v, u, v >= 0
        cost = np.ones(2 * d)
        b = [(0, hi) for hi in 1 - p] + [(0, lo) for lo in p]
        res = linprog(cost, A_eq=np.r_[w, -w][None], b_eq=[c], bounds=b)
        return float(res.fun)
    cons = {"type": "eq", "fun": lambda v: w @ v - c, "jac": lambda v: w}
    res = minimize(
        lambda v: v @ v, np.zeros(d), jac=lambda v: 2 * v, bounds=bounds, constraints=cons
    )
    return float(np.sqrt(res.fun))


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
@pytest.mark.parametrize("path", ["newton", "fallback", "sort-only"])
def test_projection_matches_scipy_with_active_box(norm, path, monkeypatch) -> None:
    if path == "fallback":  # no Newton step: every row goes to the sorting fallback
        monkeypatch.setattr(projection_mod, "_NEWTON_STEPS", 0)
    if path == "sort-only":  # the accelerator path
        monkeypatch.setattr(projection_mod, "_sort_only", lambda device: True)
    g = torch.Generator().manual_seed(1)
    n, d = 6, 12
    p = torch.rand(n, d, generator=g, dtype=torch.float64)
    p[:, :3] = torch.tensor([0.0, 1.0, 0.97], dtype=torch.float64)  # coordinates at the box
    w = torch.randn(n, d, generator=g, dtype=torch.float64)
    c = 0.6 * torch.randn(n, generator=g, dtype=torch.float64)
    threat = make_threat(norm, 1.0)
    delta = project_hyperplane_box(threat, p, w, c)
    assert torch.allclose((w * delta).sum(1), c, atol=1e-9)  # on the hyperplane
    assert bool(((p + delta) >= -1e-12).all()) and bool(((p + delta) <= 1 + 1e-12).all())
    for i in range(n):
        ref = _lp_projection(p[i].numpy(), w[i].numpy(), float(c[i]), norm)
        assert float(threat.norm(delta[i : i + 1])) == pytest.approx(ref, rel=1e-5, abs=1e-8)


def test_projection_unreachable_hyperplane_pushes_to_the_box() -> None:
    p = torch.full((1, 4), 0.5)
    w = torch.ones(1, 4)
    delta = project_hyperplane_box(make_threat("linf", 1.0), p, w, torch.tensor([10.0]))
    assert torch.allclose(delta, torch.full((1, 4), 0.5))


# ------------------------------------------------------------------ exact margins


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
@pytest.mark.parametrize("k", [2, 5])
def test_linear_model_exact_margin(norm: str, k: int) -> None:
    m = linear_model(40, k, seed=k)
    g = torch.Generator().manual_seed(0)
    x = 0.5 + 0.01 * torch.randn(12, 40, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = m(x).argmax(1)
    res = boundary_search(m, x, y, None, make_threat(norm, 0.3), steps=50)
    ref = analytic_margin(m, x, y, norm)
    assert float(ref.max()) < 0.4  # every coordinate of the optimum stays inside [0, 1]
    assert bool(res.found.all())
    assert torch.allclose(res.distance, ref, rtol=1e-4)
    with torch.no_grad():
        margin = hard_margin(m(res.x_boundary), y)
    assert bool((margin < 0).all())  # verified: prediction changed
    assert torch.allclose(margin, torch.zeros_like(margin), atol=1e-4)  # ... on the boundary
    assert torch.equal(res.phi_value, margin)
    # plain FAB (no line search) is within its overshoot of the exact value
    plain = boundary_search(m, x, y, None, make_threat(norm, 0.3), steps=50, refine_steps=0)
    assert bool((plain.distance >= ref * (1 - 1e-5)).all())
    assert bool((plain.distance <= ref * 1.06).all())


def test_box_active_margin_equals_exact_projection() -> None:
    """Binary linear model, inputs near the box: FAB equals the box-constrained projection."""
    m = linear_model(30, 2, seed=3)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(8, 30, generator=g, dtype=torch.float64).round()  # all coordinates at 0 or 1
    with torch.no_grad():
        y = m(x).argmax(1)
        w = m.weight[1 - y] - m.weight[y]  # phi = z_y - z_other = -(w.x + b)
        f = (m(x).gather(1, (1 - y)[:, None]) - m(x).gather(1, y[:, None])).squeeze(1)
    for norm in ["linf", "l2"]:
        threat = make_threat(norm, 0.3)
        ref = threat.norm(project_hyperplane_box(threat, x, w, -f))
        res = boundary_search(m, x, y, None, threat, steps=30)
        reach = res.found
        assert bool(reach.any())
        assert torch.allclose(res.distance[reach], ref[reach], rtol=1e-4)
        assert float(res.x_boundary.min()) >= 0.0 and float(res.x_boundary.max()) <= 1.0


def soft_margin(beta: float):
    def phi(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z_y = logits.gather(1, y[:, None]).squeeze(1)
        other = logits.scatter(1, y[:, None], float("-inf"))
        return z_y - torch.logsumexp(beta * other, 1) / beta

    return phi


def test_custom_soft_margin_phi_dyart_settings() -> None:
    """DyART's call: soft margin, 20 steps, random start on the Linf sphere of radius eps/2."""
    m = linear_model(30, 5, seed=4)
    x = 0.5 + 0.01 * torch.randn(
        10, 30, generator=torch.Generator().manual_seed(5), dtype=torch.float64
    )
    with torch.no_grad():
        m.weight.mul_(30.0)  # large logits: the soft margin is positive on clean inputs
        m.bias.mul_(30.0)
        y = m(x).argmax(1)
    phi = soft_margin(5.0)
    with torch.no_grad():
        assert bool((phi(m(x), y) > 0).all())
    eps = 0.004  # of the order of the margins
    gen = torch.Generator().manual_seed(0)
    m.train()
    res = boundary_search(
        m, x, y, phi, make_threat("linf", eps), steps=20, random_start=True,
        start_radius=eps / 2, generator=gen, max_radius=None,
    )  # fmt: skip
    assert m.training  # no mode switch
    assert bool(res.found.all())
    with torch.no_grad():
        phi_at = phi(m(res.x_boundary), y)
    assert bool((phi_at <= 0).all()) and torch.equal(phi_at, res.phi_value)
    assert bool((phi_at > -1e-3).all())  # on the soft boundary
    # hard - log(K-1)/beta <= phi_soft <= hard: the soft zero set lies between two level sets
    # of the hard margin, which bounds the true distance from below (any verified point is at
    # least that far) and from above (FAB is a local method and DyART's 20 steps from a random
    # start do not fully converge: allow 15%, and 2% for 100 steps from the clean input; the
    # K = 2 case below is exact).
    with torch.no_grad():
        z = m(x)
        w = m.weight
        gap = z.gather(1, y[:, None]) - z - math.log(4) / 5.0
        wn = torch.linalg.vector_norm(w[y][:, None, :] - w[None], ord=1.0, dim=2)
        lower = (gap / wn).scatter(1, y[:, None], math.inf).amin(1)
    upper = analytic_margin(m, x, y, "linf")
    assert bool((res.distance >= lower * (1 - 1e-6)).all())
    assert bool((res.distance <= upper * 1.15).all())
    assert torch.allclose(res.distance, make_threat("linf", 1).distance(res.x_boundary, x))
    full = boundary_search(m, x, y, phi, make_threat("linf", eps), steps=100)
    assert bool((full.distance >= lower * (1 - 1e-6)).all())
    assert bool((full.distance <= upper * 1.02).all())


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_custom_phi_binary_soft_margin_is_exact(norm: str) -> None:
    """With two classes the soft margin is the hard margin: the analytic distance is exact."""
    m = linear_model(30, 2, seed=6)
    x = 0.5 + 0.01 * torch.randn(
        8, 30, generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    with torch.no_grad():
        y = m(x).argmax(1)
    res = boundary_search(m, x, y, soft_margin(5.0), make_threat(norm, 0.3), steps=30)
    assert bool(res.found.all()) and bool((res.phi_value <= 0).all())
    assert torch.allclose(res.distance, analytic_margin(m, x, y, norm), rtol=1e-4)


def test_random_start_lies_on_the_threat_sphere() -> None:
    x = torch.full((5, 1, 6, 6), 0.5)
    for norm in ["linf", "l2", "l1"]:
        threat = make_threat(norm, 1.0)
        v = fab_mod._sphere(threat, x, torch.full((5,), 0.1), torch.Generator().manual_seed(0))
        assert torch.allclose(threat.norm(v), torch.full((5,), 0.1), rtol=1e-5)


def test_per_sample_weights_batch_equals_single() -> None:
    """Easy (near the boundary) and hard samples together give the same per-sample result as
    each alone: step weights are per sample, never sample 0's."""
    m = small_mlp()
    g = torch.Generator().manual_seed(7)
    x = torch.rand(8, 20, generator=g)
    with torch.no_grad():
        y = m(x).argmax(1)
    for norm in ["linf", "l2"]:
        threat = make_threat(norm, 0.3)
        batch = boundary_search(m, x, y, None, threat, steps=30)
        assert bool(batch.found.all())
        d = batch.distance
        assert float(d.max() / d.min()) > 3  # the batch really mixes easy and hard samples
        for i in range(8):
            one = boundary_search(m, x[i : i + 1], y[i : i + 1], None, threat, steps=30)
            assert float(one.distance[0]) == pytest.approx(float(d[i]), rel=1e-4)


def test_misclassified_and_max_radius() -> None:
    m = linear_model(20, 3, seed=8)
    x = 0.5 + 0.01 * torch.randn(
        6, 20, generator=torch.Generator().manual_seed(9), dtype=torch.float64
    )
    with torch.no_grad():
        pred = m(x).argmax(1)
    y = pred.clone()
    y[0] = (pred[0] + 1) % 3  # misclassified: distance 0, already found
    res = boundary_search(m, x, y, None, make_threat("l2", 1.0), steps=20)
    assert bool(res.found[0]) and float(res.distance[0]) == 0.0
    assert torch.equal(res.x_boundary[0], x[0])
    ref = analytic_margin(m, x, y, "l2")
    cap = float(ref[1:].median())
    capped = boundary_search(m, x, y, None, make_threat("l2", 1.0), steps=20, max_radius=cap)
    far = ~capped.found
    assert bool(far.any()) and bool((capped.distance[far] == math.inf).all())
    assert torch.equal(capped.x_boundary[far], x[far])
    assert bool((capped.distance[capped.found] <= cap).all())


def test_targeted_class_finds_that_boundary() -> None:
    m = linear_model(30, 4, seed=10)
    x = 0.5 + 0.01 * torch.randn(
        6, 30, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    with torch.no_grad():
        z = m(x)
    y = z.argmax(1)
    t = (y + 2) % 4
    res = boundary_search(m, x, y, None, make_threat("l2", 1.0), steps=40, targeted_class=t)
    w = m.weight.detach()
    ref = (z.gather(1, y[:, None]) - z.gather(1, t[:, None])).squeeze(1) / (w[y] - w[t]).norm(dim=1)
    # the z_y = z_t hyperplane; the crossing point may belong to a third class's region
    assert bool(res.found.all())
    assert torch.allclose(res.distance, ref.detach(), rtol=1e-4)
    with torch.no_grad():
        zb = m(res.x_boundary)
    assert bool((zb.gather(1, t[:, None]) > zb.gather(1, y[:, None])).all())


def test_boundary_search_rejects_bad_arguments() -> None:
    m = linear_model(5, 3)
    x, y = torch.rand(2, 5, dtype=torch.float64), torch.tensor([0, 1])
    threat = make_threat("linf", 0.1)
    with pytest.raises(RobustlabError, match="steps"):
        boundary_search(m, x, y, None, threat, steps=-1)
    with pytest.raises(RobustlabError, match="beta"):
        boundary_search(m, x, y, None, threat, beta=0.0)
    with pytest.raises(RobustlabError, match="either phi or targeted_class"):
        boundary_search(m, x, y, hard_margin, threat, targeted_class=y)
    with pytest.raises(AttackInputError, match="differ"):
        boundary_search(m, x, y, None, threat, targeted_class=y)
    with pytest.raises(RobustlabError, match="ThreatModel"):
        boundary_search(m, x, y, None, "linf")  # type: ignore[arg-type]


# ------------------------------------------------------------------ attack contract


@pytest.mark.parametrize("name", ["fab", "fab-t"])
@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.5)])
def test_fab_attack_contract(name: str, norm: str, eps: float) -> None:
    model = BNNet()
    model(torch.rand(16, 1, 8, 8))  # non-trivial BN statistics
    model.train()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        y = model(x).argmax(1)
    model.train()
    x_copy, y_copy = x.clone(), y.clone()
    model.modes.clear()
    bn = {k: v.clone() for k, v in model.state_dict().items()}
    kw = {"n_target_classes": 2} if name == "fab-t" else {"restarts": 2}
    attack = create_attack(name, eps=eps, norm=norm, steps=15, seed=1, **kw)
    x_adv = attack(model, x, y)
    assert torch.equal(x, x_copy) and torch.equal(y, y_copy)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    threat = make_threat(norm, eps)
    assert bool((threat.distance(x_adv, x) <= eps * (1 + 1e-5)).all())
    assert model.modes and not any(model.modes)
    assert model.training and model.bn.training
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, bn[k]), k
    again = create_attack(name, eps=eps, norm=norm, steps=15, seed=1, **kw)(model, x, y)
    assert torch.equal(x_adv, again)
    model.eval()
    with torch.no_grad():
        changed = (x_adv != x).flatten(1).any(1)
        pred = model(x_adv).argmax(1)
    assert bool((pred[changed] != y[changed]).all())  # every changed point is adversarial


def test_fab_eps_bounded_consistent_with_minimal() -> None:
    m = small_mlp(seed=1, d=16, k=3)
    x = torch.rand(20, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = m(x).argmax(1)
    minimal = FAB(eps=1.0, norm="l2", steps=30).minimal(m, x, y)
    eps = float(minimal.distance.median())
    x_adv = FAB(eps=eps, norm="l2", steps=30)(m, x, y)
    with torch.no_grad():
        broken = m(x_adv).argmax(1) != y
    assert torch.equal(broken, minimal.distance <= eps)
    fabt = FABTargeted(eps=1.0, norm="l2", steps=30, n_target_classes=2).minimal(m, x, y)
    assert bool(fabt.found.all())
    with torch.no_grad():
        assert bool((m(fabt.x_boundary).argmax(1) != y).all())
    # with all targets, FAB-T's closest point is as close as FAB's (same boundary, exhaustive)
    assert float(fabt.distance.median()) <= float(minimal.distance.median()) * 1.02


def test_fab_targeted_batched_targets_equal_one_after_another() -> None:
    """Targets solved side by side (the default) give the points of running them in order."""
    m = small_mlp(seed=3, d=16, k=6).double()
    x = torch.rand(24, 16, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    with torch.no_grad():
        y = m(x).argmax(1)
    eps = float(FAB(eps=1.0, norm="linf", steps=20).minimal(m, x, y).distance.median())
    outs, calls = {}, {}
    for rows in (1, 64):
        attack = FABTargeted(eps=eps, steps=20, n_target_classes=5)
        attack.max_batch_rows = rows  # 1: one target at a time; 64: 12 survivors x 4
        solve, calls[rows] = attack._solve, []
        attack._solve = lambda *a, _s=solve, _c=calls[rows], **k: _c.append(1) or _s(*a, **k)
        outs[rows] = attack(m, x, y)
    assert (len(calls[1]), len(calls[64])) == (5, 2)  # first target, then the other 4 at once
    assert torch.allclose(outs[64], outs[1], atol=1e-12, rtol=0)
    with torch.no_grad():
        broken = int((m(outs[64]).argmax(1) != y).sum())
    assert 0 < broken < x.shape[0]  # eps is binding: survivors went through the batched call


def test_per_sample_eps_tensor() -> None:
    m = small_mlp(seed=2, d=16, k=4)
    x = torch.rand(12, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        y = m(x).argmax(1)
    minimal = FAB(eps=1.0, norm="linf", steps=20).minimal(m, x, y)
    eps = torch.where(torch.arange(12) % 2 == 0, minimal.distance * 1.01, minimal.distance * 0.5)
    threat = make_threat("linf", eps)
    for attack in [FAB(threat=threat, steps=20), FABTargeted(threat=threat, steps=20)]:
        x_adv = attack(m, x, y)
        assert bool((threat.distance(x_adv, x) <= eps * (1 + 1e-6)).all())
        with torch.no_grad():
            broken = m(x_adv).argmax(1) != y
        assert not bool(broken[1::2].any())  # eps below the minimal distance: never broken
        assert bool(broken[::2].sum() >= 4)


def test_fab_attack_bad_input() -> None:
    m = small_mlp(d=16)
    with pytest.raises(RobustlabError):
        FAB(eps=-0.1)
    with pytest.raises(RobustlabError, match="unknown norm"):
        FAB(eps=0.1, norm="l7")
    with pytest.raises(RobustlabError, match="eps"):
        FAB()
    with pytest.raises(AttackInputError):
        FAB(eps=0.1)(m, torch.full((2, 16), 2.0), torch.tensor([0, 1]))
    with pytest.raises(AttackInputError):
        FAB(eps=0.1)(m, torch.rand(2, 16), torch.tensor([0, 9]))
    with pytest.raises(RobustlabError, match="n_target_classes"):
        FABTargeted(eps=0.1, n_target_classes=0)


# ------------------------------------------------------------------ real model, reference


@functools.lru_cache(maxsize=1)
def _train_mlp(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    from robustlab.data import load_split

    s = load_split("mnist-mini", "train")
    x, y = s.images[:4000].float() / 255, s.labels[:4000]
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Flatten(), nn.Linear(784, 48), nn.ReLU(), nn.Linear(48, 10))
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        for i in range(0, len(x), 100):
            loss = nn.functional.cross_entropy(m(x[i : i + 100]), y[i : i + 100])
            opt.zero_grad()
            loss.backward()
            opt.step()
    t = load_split("mnist-mini", "test")
    xt, yt = t.images[:60].float() / 255, t.labels[:60]
    m.eval()
    with torch.no_grad():
        ok = m(xt).argmax(1) == yt
    assert float(ok.float().mean()) > 0.8
    return m, xt[ok], yt[ok]


@pytest.mark.parametrize("norm,q", [("linf", math.inf), ("l2", 2.0)])
def test_median_margin_no_worse_than_torchattacks(norm: str, q: float) -> None:
    torchattacks = pytest.importorskip("torchattacks")
    m, x, y = _train_mlp()
    big = 1.0 if norm == "linf" else 28.0  # no eps limit: minimal perturbations
    x, y = x[:40], y[:40]
    ours = FAB(eps=big, norm=norm, steps=30).minimal(m, x, y)
    ref = torchattacks.FAB(m, norm="Linf" if norm == "linf" else "L2", eps=big, steps=30)
    x_ref = ref(x, y)
    with torch.no_grad():
        ok = m(x_ref).argmax(1) != y
    d_ref = torch.where(
        ok, torch.linalg.vector_norm((x_ref - x).flatten(1), ord=q, dim=1), math.inf
    )
    assert bool(ours.found.all())
    assert float(ours.distance.median()) <= float(d_ref.median()) * 1.05
    # per sample, the line search can only improve plain FAB
    plain = FAB(eps=big, norm=norm, steps=30, refine_steps=0).minimal(m, x, y)
    assert bool((ours.distance <= plain.distance * (1 + 1e-6)).all())


def test_trades_smallcnn_margins_verified(trades_checkpoint, shared_data) -> None:
    from robustlab.data import load_split
    from robustlab.models import create_model, load_checkpoint

    model = create_model("smallcnn", dataset="mnist")
    load_checkpoint(model, trades_checkpoint)
    s = load_split("mnist", "test", root=shared_data)
    x, y = s.images[:8].float() / 255, s.labels[:8]
    res = FABTargeted(eps=0.3, steps=20, n_target_classes=1).minimal(model, x, y)
    model.eval()
    with torch.no_grad():
        pred = model(res.x_boundary).argmax(1)
    assert bool((pred[res.found] != y[res.found]).all())
    # a TRADES model at eps 0.3: the closest Linf boundary is typically beyond 0.2
    assert float(res.distance.median()) > 0.2


class _LayoutRounding(nn.Module):
    """A float32 linear classifier whose logits move by 2 units of rounding (of the largest
    |logit|) with the parity of the batch size: what BLAS kernels that block the reduction by
    batch size do on real CPUs (issue 11: MKL on AVX-512 gave 1-2 units for one input between
    batches of 14 and 16 rows)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = linear_model(12, 2, seed=4).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.fc(x.flatten(1))
        unit = torch.finfo(z.dtype).eps * z.abs().amax(1, keepdim=True)
        sign = 1.0 if x.shape[0] % 2 else -1.0
        return z + sign * 2 * unit * torch.tensor([1.0, -1.0])


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_points_stay_verified_when_the_batch_layout_changes_the_rounding(norm: str) -> None:
    """The search runs on the unsolved rows (15 here), the final check on all 16: a point found
    at a float32 tie would flip back there; the solver's guard keeps every one verified."""
    model = _LayoutRounding()
    g = torch.Generator().manual_seed(0)
    x = 0.5 + 0.05 * torch.randn(16, 12, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[0] = 1 - y[0]  # one misclassified sample: the solver works on the other 15
    res = boundary_search(model, x, y, None, make_threat(norm, 0.3), steps=30)
    assert bool(res.found.all())
    for rows in (slice(0, 16), slice(1, 16), slice(1, 2)):  # even, odd, single-row layouts
        with torch.no_grad():
            assert bool((hard_margin(model(res.x_boundary[rows]), y[rows]) < 0).all())
    ref = analytic_margin(copy.deepcopy(model.fc).double(), x.double(), y, norm)
    # the guard moves each point past the tie by <= 64 float32 units of the logits' scale
    # (~1e-5 here), far below the 1e-3 relative accuracy asked of the float32 solver
    torch.testing.assert_close(res.distance[1:].double(), ref[1:], rtol=1e-3, atol=1e-6)
