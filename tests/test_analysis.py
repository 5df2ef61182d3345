"""Analytic checks of robustlab.analysis on small models where the answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats as sps
from torch import nn

from robustlab.analysis.dynamics import (
    boundary_speed,
    conflicting_dynamics,
    finite_difference_speed,
    hard_margin,
    objective_velocity,
    parameter_velocity,
)
from robustlab.analysis.fisher import (
    cross_class_kl,
    explicit_fisher,
    fisher_summary,
    kl_divergence,
)
from robustlab.analysis.jacobian import (
    input_jacobian,
    jacobian_frobenius,
    jacobian_frobenius_projected,
    jacobian_spectral_norm,
)
from robustlab.analysis.logits import (
    bootstrap_ci,
    confidence_disagreement,
    logit_statistics_from_logits,
    rankdata,
    spearman,
    summarize,
)
from robustlab.attacks.threat import L2, Linf
from robustlab.errors import RobustlabError


def _mlp(d: int = 48, k: int = 10, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 32), nn.Tanh(), nn.Linear(32, k)).double()


# ---------------------------------------------------------------- logits (paper A)
def test_logit_statistics_by_hand() -> None:
    z = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 2.5]])
    y = torch.tensor([0, 1])
    s = logit_statistics_from_logits(z, y)
    np.testing.assert_allclose(s["max_logit"], [3.0, 2.5])
    np.testing.assert_allclose(s["gap"], [2.0, 0.5])
    np.testing.assert_allclose(s["gap_to_mean"], [3 - 4 / 3, 2.5 - 1.5])
    p = torch.softmax(z.double(), 1).numpy()
    np.testing.assert_allclose(s["confidence"], p.max(1))
    np.testing.assert_allclose(s["entropy"], -(p * np.log(p)).sum(1))
    np.testing.assert_allclose(s["true_logit"], [3.0, 2.0])
    np.testing.assert_allclose(s["true_gap"], [2.0, -0.5])
    np.testing.assert_allclose(s["true_prob"], [p[0, 0], p[1, 1]])
    np.testing.assert_allclose(s["correct"], [1.0, 0.0])


def test_bootstrap_summary_is_seeded_and_covers_the_mean() -> None:
    v = np.random.default_rng(1).normal(2.0, 1.0, size=400)
    a, b = bootstrap_ci(v, seed=3), bootstrap_ci(v, seed=3)
    assert a == b
    assert a[0] < v.mean() < a[1]
    half = 1.96 * v.std(ddof=1) / math.sqrt(v.size)  # normal-theory half width
    assert (a[1] - a[0]) / 2 == pytest.approx(half, rel=0.15)
    s = summarize({"x": v}, n_boot=200)
    assert s["x"]["mean"] == pytest.approx(v.mean()) and s["x"]["n"] == 400


def test_ranks_and_spearman_match_scipy() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, size=50).astype(float)  # many ties
    b = a + rng.normal(size=50)
    np.testing.assert_allclose(rankdata(a), sps.rankdata(a))
    assert spearman(a, b) == pytest.approx(sps.spearmanr(a, b).statistic)


def test_confidence_disagreement_finds_the_swapped_samples() -> None:
    a = np.linspace(0.1, 0.9, 20)
    b = a.copy()
    b[[2, 17]] = b[[17, 2]]  # model B swaps one confident and one unconfident sample
    d = confidence_disagreement(a, b, top_n=1)
    assert d["a_over_b"] == [17] and d["b_over_a"] == [2]
    assert d["spearman"] < 1.0
    with pytest.raises(RobustlabError, match="different samples"):
        confidence_disagreement(a, b[:5])


# ---------------------------------------------------------------- Jacobian (paper B)
def test_jacobian_norms_match_the_full_jacobian() -> None:
    m = _mlp()
    x = torch.rand(6, 3, 4, 4, dtype=torch.float64)
    j = input_jacobian(m, x)
    torch.testing.assert_close(jacobian_frobenius(m, x), j.norm(dim=(1, 2)))
    sigma = torch.linalg.matrix_norm(j, ord=2)
    torch.testing.assert_close(jacobian_spectral_norm(m, x, iters=60), sigma, rtol=1e-6, atol=0)


def test_projected_jacobian_norm_converges_to_the_exact_one() -> None:
    m = _mlp()
    x = torch.rand(8, 3, 4, 4, dtype=torch.float64)
    exact = jacobian_frobenius(m, x)
    errs = []
    for n_proj in (4, 64, 1024):
        est = jacobian_frobenius_projected(m, x, n_proj=n_proj, seed=1)
        errs.append(float(((est - exact).abs() / exact).mean()))
    assert errs[2] < errs[1] < errs[0]
    assert errs[2] < 0.03


# ---------------------------------------------------------------- Fisher (paper C)
def test_fisher_kk_path_equals_the_explicit_dxd_matrix() -> None:
    m = _mlp()
    x = torch.rand(4, 3, 4, 4, dtype=torch.float64)
    f = explicit_fisher(m, x)  # (N, 48, 48)
    s = fisher_summary(m, x)
    eig = torch.linalg.eigvalsh(f)
    np.testing.assert_allclose(s["fisher_fro"], torch.linalg.matrix_norm(f).numpy(), rtol=1e-9)
    np.testing.assert_allclose(s["fisher_top_eig"], eig[:, -1].numpy(), rtol=1e-9)
    np.testing.assert_allclose(s["fisher_trace"], f.diagonal(dim1=1, dim2=2).sum(1), rtol=1e-9)
    assert int((eig > 1e-12 * eig[:, -1:]).sum(1).max()) <= 9  # rank at most K - 1


def test_kl_of_a_small_step_is_half_the_fisher_quadratic_form() -> None:
    m = _mlp()
    x = torch.rand(4, 3, 4, 4, dtype=torch.float64) * 0.8 + 0.1
    f = explicit_fisher(m, x)
    for scale in (1e-2, 1e-3):
        delta = torch.randn_like(x, generator=torch.Generator().manual_seed(2)) * scale
        with torch.no_grad():
            kl = kl_divergence(m(x), m(x + delta))
        dv = delta.flatten(1)
        quad = torch.einsum("ni,nij,nj->n", dv, f, dv) / 2
        torch.testing.assert_close(kl, quad, rtol=20 * scale, atol=0)


def test_cross_class_kl_equals_a_brute_force_loop() -> None:
    m = _mlp()
    x = torch.rand(24, 3, 4, 4, dtype=torch.float64)
    y = torch.arange(24) % 3
    r = cross_class_kl(m, x, y, group_size=6, seed=5)
    perm = torch.randperm(24, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        z = m(x)
    vals = []
    for g in perm.reshape(4, 6):
        for i in g:
            for j in g:
                if y[i] != y[j]:
                    vals.append(float(kl_divergence(z[i : i + 1], z[j : j + 1])))
    assert r["n_pairs"] == len(vals)
    assert r["kl_metric"] == pytest.approx(np.mean(vals), rel=1e-10)


# ---------------------------------------------------------------- dynamics (paper D)
class _Linear2(nn.Module):
    """A two-class linear model: its margin and closest boundary point are known exactly."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d, 2, dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def _linear_margin(model: _Linear2, x: torch.Tensor, y: torch.Tensor, q: float) -> torch.Tensor:
    w = model.fc.weight[y] - model.fc.weight[1 - y]
    b = model.fc.bias[y] - model.fc.bias[1 - y]
    phi = (w * x.flatten(1)).sum(1) + b
    return (phi / torch.linalg.vector_norm(w, ord=q, dim=1)).detach()


def _linear_boundary_point(model: _Linear2, x: torch.Tensor, y: torch.Tensor, norm: str):
    w = (model.fc.weight[y] - model.fc.weight[1 - y]).detach()
    if norm == "linf":
        r = _linear_margin(model, x, y, 1.0)
        step = w.sign()
    else:
        r = _linear_margin(model, x, y, 2.0)
        step = w / w.norm(dim=1, keepdim=True)
    return x - r[:, None, None, None] * step.reshape(x.shape)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_closed_form_speed_equals_finite_difference_on_a_linear_model(norm: str) -> None:
    torch.manual_seed(0)
    model = _Linear2(12)
    x = 0.4 + 0.2 * torch.rand(8, 1, 3, 4, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
    threat = Linf(0.1) if norm == "linf" else L2(0.5)
    y_train = torch.randint(0, 2, (8,))

    def loss_fn(m: nn.Module) -> torch.Tensor:
        return nn.functional.cross_entropy(m(x), y_train)

    velocity = parameter_velocity(model, loss_fn)
    x_hat = _linear_boundary_point(model, x, y, norm)
    with torch.no_grad():
        assert hard_margin(model(x_hat), y).abs().max() < 1e-10  # on the boundary
    closed = boundary_speed(model, x_hat, y, velocity, threat)["speed"]
    fd = finite_difference_speed(
        model, loss_fn, lambda m: _linear_margin(m, x, y, threat.q), lr=1e-6
    )
    torch.testing.assert_close(closed, fd, rtol=1e-4, atol=1e-9)
    assert model.fc.weight.grad is None  # nothing written on the analysed model


def test_velocity_of_a_registered_objective_leaves_batchnorm_untouched() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)
    )
    x, y = torch.rand(8, 1, 6, 6), torch.randint(0, 3, (8,))
    before = model[1].running_mean.clone()

    def objective(m, xb, yb, index, state):  # the objective call signature
        return nn.functional.cross_entropy(m(xb), yb), {}

    try:
        from robustlab.objectives import create_objective

        objective = create_objective("standard")
    except ImportError:  # objectives package not assembled yet: same contract, plain CE
        pass
    v = objective_velocity(model, objective, x, y)
    assert set(v) == {n for n, _ in model.named_parameters()}
    torch.testing.assert_close(model[1].running_mean, before)
    model.train()
    loss = nn.functional.cross_entropy(model(x), y)
    g = torch.autograd.grad(loss, list(model.parameters()))
    torch.testing.assert_close(v["4.weight"], -g[-2])


def test_conflicting_dynamics_bins() -> None:
    r = np.array([0.01, 0.02, 0.03, 0.06, 0.5, np.nan])
    v = np.array([1.0, -1.0, -2.0, 3.0, -1.0, 1.0])
    out = conflicting_dynamics(r, v, eps=0.1, n_bins=4)  # width 0.025
    assert out["count"] == [2, 1, 1, 0, 1]
    assert out["frac_negative"][0] == 0.5 and out["frac_positive"][2] == 1.0
    assert math.isnan(out["frac_positive"][3])
    assert out["frac_negative_below_eps"] == pytest.approx(2 / 4)


# ---------------------------------------------------------------- margins from the solver
@pytest.mark.parametrize("norm,q", [("linf", 1.0), ("l2", 2.0)])
def test_margin_of_a_linear_model_is_phi_over_the_dual_norm(norm: str, q: float) -> None:
    from robustlab.analysis.margins import minimum_margins

    torch.manual_seed(1)
    model = _Linear2(12).float()
    x = 0.4 + 0.2 * torch.rand(16, 1, 3, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:2] = 1 - y[:2]  # two misclassified samples: margin 0
    r = minimum_margins(model, x, y, norm=norm, steps=30)
    w = (model.fc.weight[y] - model.fc.weight[1 - y]).detach()
    phi = (w * x.flatten(1)).sum(1) + (model.fc.bias[y] - model.fc.bias[1 - y]).detach()
    exact = phi.abs() / torch.linalg.vector_norm(w, ord=q, dim=1)
    assert r["verified"].all() and not r["correct"][:2].any() and r["correct"][2:].all()
    assert (r["margin"][:2] == 0).all()
    torch.testing.assert_close(r["margin"][2:].float(), exact[2:], rtol=1e-3, atol=1e-6)
    assert (r["phi"][2:] < 0).all()  # every boundary point is verified on the far side


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_closed_form_speed_matches_an_sgd_step_with_the_solver(norm: str) -> None:
    """A nonlinear model: margins before and after one real SGD step come from the solver."""
    from robustlab.analysis.margins import minimum_margins
    from robustlab.attacks.threat import make_threat

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(20, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    x = 0.3 + 0.4 * torch.rand(24, 1, 4, 5, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
    y_train = torch.randint(0, 3, (24,))

    def loss_fn(m: nn.Module) -> torch.Tensor:
        return nn.functional.cross_entropy(m(x), y_train)

    def margins(m: nn.Module) -> torch.Tensor:
        return minimum_margins(m, x, y, norm=norm, steps=60)["margin"]

    before = minimum_margins(model, x, y, norm=norm, steps=60)
    v = parameter_velocity(model, loss_fn)
    closed = boundary_speed(model, before["x_hat"], y, v, make_threat(norm, 0.1))["speed"]
    fd = finite_difference_speed(model, loss_fn, margins, lr=1e-3, margins_before=before["margin"])
    scale = float(closed.abs().mean())
    assert float((fd - closed).abs().max()) < 0.02 * scale
    assert scale > 1e-3  # the step moves the boundary measurably


def _box_solution(model: _Linear2, x: torch.Tensor, y: torch.Tensor, norm: str):
    """Exact box-constrained closest boundary point of the linear model (bisection, float64)."""
    w = (model.fc.weight[y] - model.fc.weight[1 - y]).detach()
    phi = (w * x.flatten(1)).sum(1) + (model.fc.bias[y] - model.fc.bias[1 - y]).detach()
    xf = x.flatten(1)
    room = torch.where(w > 0, xf, 1 - xf)  # how far each coordinate can move towards phi = 0
    scale = torch.ones_like(w) if norm == "linf" else w.abs()
    lo, hi = torch.zeros_like(phi), torch.full_like(phi, 1e3)
    for _ in range(200):
        t = (lo + hi) / 2
        reach = (w.abs() * torch.minimum(t[:, None] * scale, room)).sum(1)
        lo, hi = torch.where(reach < phi, t, lo), torch.where(reach < phi, hi, t)
    delta = -w.sign() * torch.minimum(hi[:, None] * scale, room)
    r = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    return r, (xf + delta).reshape(x.shape)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_box_aware_speed_matches_the_box_constrained_margin(norm: str) -> None:
    """With pixels at 0 (as on MNIST) the box binds; speed_box follows the finite difference."""
    torch.manual_seed(3)
    model = _Linear2(12)
    x = torch.rand(8, 1, 3, 4, dtype=torch.float64) * 0.3 + 0.35
    x[:, :, :, :2] = 0.0  # half the coordinates sit on the box
    with torch.no_grad():
        model.fc.weight[:, :6] = model.fc.weight[:, :6].abs() * torch.tensor([[3.0], [-3.0]])
        y = torch.zeros(8, dtype=torch.long)  # class 0 wins: phi > 0 pushes the zeros down
        model.fc.bias[0] = 1.0 + (model(x)[:, 1] - model(x)[:, 0]).max()
    assert (model(x).argmax(1) == 0).all()
    threat = Linf(0.1) if norm == "linf" else L2(0.5)
    y_train = torch.randint(0, 2, (8,), generator=torch.Generator().manual_seed(0))

    def loss_fn(m: nn.Module) -> torch.Tensor:
        return nn.functional.cross_entropy(m(x), y_train)

    r, x_hat = _box_solution(model, x, y, norm)
    assert (x_hat.flatten(1)[:, :6] == 0).any()  # the box is active
    res = boundary_speed(model, x_hat, y, parameter_velocity(model, loss_fn), threat, x=x)
    fd = finite_difference_speed(
        model, loss_fn, lambda m: _box_solution(m, x, y, norm)[0], lr=1e-6, margins_before=r
    )
    torch.testing.assert_close(res["speed_box"], fd, rtol=1e-3, atol=1e-8)
    assert float((res["speed"] - fd).abs().max()) > 0.05 * float(fd.abs().mean())
