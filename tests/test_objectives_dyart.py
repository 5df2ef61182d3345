"""DyART: the margin term's parameter gradient, the filter, burn-in and the no-point case."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.objectives import StepState, create_objective
from robustlab.objectives.dyart import first_order_aligned, soft_margin


@pytest.fixture(scope="module")
def trained_mlp(shared_data: Path) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small smooth (SiLU, no BatchNorm) float64 MLP briefly trained on real MNIST digits."""
    from robustlab.data import load_split

    split = load_split("mnist", "train", root=shared_data)
    x = split.images[:1024].double().div(255.0)
    y = split.labels[:1024]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.SiLU(), nn.Linear(32, 10)).double()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for i in range(150):
        b = slice((i * 128) % 1024, (i * 128) % 1024 + 128)
        opt.zero_grad()
        F.cross_entropy(model(x[b]), y[b]).backward()
        opt.step()
    return model, x[:48], y[:48]


def state(model: nn.Module, seed: int = 0, epoch: int = 0) -> StepState:
    return StepState(raw_model=model, epoch=epoch, generator=torch.Generator().manual_seed(seed))


def loose(**kw: object) -> dict:
    """Settings that keep most boundary points of the small MLP (the filter is tested apart)."""
    hp = dict(eps=0.1, burn_in=0, lam=2.0, alpha=1.0, r0=10.0, phi_min=-5.0, fab_steps=10)
    hp.update(first_order_check=False)
    hp.update(kw)
    return hp


def test_soft_margin_is_a_lower_bound_of_the_hard_margin() -> None:
    z = torch.randn(50, 10, dtype=torch.float64) * 3
    y = torch.randint(0, 10, (50,))
    hard = z.gather(1, y[:, None]).squeeze(1) - z.scatter(1, y[:, None], -1e9).amax(1)
    soft = soft_margin(z, y, 5.0)
    assert (soft <= hard + 1e-12).all()
    assert (hard - soft <= torch.log(torch.tensor(9.0)) / 5 + 1e-12).all()
    torch.testing.assert_close(soft_margin(z, y, 1e4), hard, atol=1e-3, rtol=0)


def test_margin_term_gradient_matches_finite_differences(trained_mlp) -> None:
    model, x, y = trained_mlp
    obj = create_objective("dyart", **loose())
    params = list(model.parameters())
    loss, logs = obj(model, x, y, None, state(model, seed=1))
    assert float(logs["kept"]) > 0.2
    total = torch.autograd.grad(loss, params)
    ce = torch.autograd.grad(F.cross_entropy(model(x), y), params)
    bb = obj.boundary_points(x, y, state(model, seed=1))  # the same points (same seed)
    assert bb.count == round(float(logs["kept"]) * x.shape[0])
    assert not bb.weight.requires_grad and not bb.x_hat.requires_grad

    with torch.no_grad():  # the term is -(lam/N) sum_kept w * phi_beta(x^)
        phi = soft_margin(model(bb.x_hat), y[bb.index], 5.0)
        ref = -obj.lam * (bb.weight * phi).sum() / x.shape[0]
        torch.testing.assert_close(loss - F.cross_entropy(model(x), y), ref)

    def margin() -> float:
        with torch.no_grad():
            return float(obj.lam * obj.margin_term(model, bb, y, x.shape[0]))

    g = torch.Generator().manual_seed(0)
    h = 1e-6
    for p, gt, gc in zip(params, total, ce, strict=True):
        flat = p.data.view(-1)
        for j in torch.randint(0, flat.numel(), (6,), generator=g).tolist():
            old = float(flat[j])
            flat[j] = old + h
            up = margin()
            flat[j] = old - h
            down = margin()
            flat[j] = old
            fd = (up - down) / (2 * h)
            auto = float(gt.view(-1)[j] - gc.view(-1)[j])
            assert auto == pytest.approx(fd, rel=1e-4, abs=1e-9)


def test_no_point_kept_gives_cross_entropy(trained_mlp) -> None:
    model, x, y = trained_mlp
    obj = create_objective("dyart", **loose(r0=1e-9))
    loss, logs = obj(model, x, y, None, state(model))
    assert float(logs["kept"]) == 0.0 and float(logs["found"]) > 0
    torch.testing.assert_close(loss, F.cross_entropy(model(x), y))
    loss.backward()  # still a differentiable loss


def test_no_correct_point_gives_cross_entropy() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).double()
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([5.0, 0.0, 0.0]))  # always predicts class 0
    x = torch.rand(6, 1, 2, 2, dtype=torch.float64)
    y = torch.full((6,), 2)
    loss, logs = create_objective("dyart", **loose())(model, x, y, None, state(model))
    assert float(logs["kept"]) == 0.0 and float(logs["correct"]) == 0.0
    torch.testing.assert_close(loss, F.cross_entropy(model(x), y))


def test_correct_points_without_a_boundary_point_give_cross_entropy() -> None:
    """Constant logits: every point is correct but the solver finds no boundary (no crash)."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).double()
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([5.0, 0.0, 0.0]))
    x = torch.rand(6, 1, 2, 2, dtype=torch.float64)
    y = torch.zeros(6, dtype=torch.long)
    loss, logs = create_objective("dyart", **loose())(model, x, y, None, state(model))
    assert float(logs["correct"]) == 1.0 and float(logs["found"]) == 0.0
    assert float(logs["kept"]) == 0.0
    torch.testing.assert_close(loss, F.cross_entropy(model(x), y))


def test_burn_in_epochs_are_plain_cross_entropy(trained_mlp) -> None:
    model, x, y = trained_mlp
    obj = create_objective("dyart", **loose(burn_in=2))
    loss, logs = obj(model, x, y, None, state(model, epoch=1))
    assert float(logs["burn_in"]) == 1.0
    torch.testing.assert_close(loss, F.cross_entropy(model(x), y))
    _, logs = obj(model, x, y, None, state(model, epoch=2))
    assert float(logs["burn_in"]) == 0.0 and float(logs["kept"]) > 0


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_boundary_points_are_on_the_far_side_and_weighted(trained_mlp, norm: str, eps: float):
    model, x, y = trained_mlp
    obj = create_objective("dyart", **loose(norm=norm, eps=eps, phi_min=-0.3))
    bb = obj.boundary_points(x, y, state(model))
    assert bb.count > 0
    with torch.no_grad():
        phi = soft_margin(model(bb.x_hat), y[bb.index], 5.0)
        assert (phi <= 0).all() and (phi > -0.3).all()
        assert (soft_margin(model(x[bb.index]), y[bb.index], 5.0) > 0).all()
    d = (bb.x_hat - x[bb.index]).flatten(1)
    r = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    torch.testing.assert_close(bb.radius, r)
    assert (bb.weight > 0).all() and float(bb.x_hat.min()) >= 0 and float(bb.x_hat.max()) <= 1


def test_first_order_filter() -> None:
    g = torch.tensor([[1.0, -2.0, 0.5, 0.0], [1.0, -2.0, 0.5, 0.0]])
    good = torch.tensor([[-0.3, 0.3, -0.29, 0.01], [0.3, 0.3, -0.29, 0.0]])
    assert first_order_aligned(good, g).tolist() == [True, False]
    assert first_order_aligned(torch.zeros(1, 4), g[:1]).tolist() == [False]


def test_dyart_keeps_batchnorm_statistics_in_margin_term() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.SiLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)
    )
    x = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        y = model.eval()(x).argmax(1)  # every point correct
    model.train()
    bn = model[1]
    obj = create_objective("dyart", **loose(eps=0.2))
    loss, logs = obj(model, x, y, None, state(model))
    assert float(logs["kept"]) > 0
    assert int(bn.num_batches_tracked) == 1  # only the outer CE forward used batch statistics
    assert model.training and bn.training
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_bad_dyart_hyperparameters() -> None:
    from robustlab.errors import ConfigError

    with pytest.raises(ConfigError, match="r0 must be a positive number"):
        create_objective("dyart", r0=-1)
    with pytest.raises(ConfigError, match=r"fab_eta must be in \[1.0, inf\]"):
        create_objective("dyart", fab_eta=0.5)
    with pytest.raises(ConfigError, match=r"norm must be one of \['linf', 'l2'\]"):
        create_objective("dyart", norm="l1")


def test_warm_starts_reuse_each_index_boundary_point(trained_mlp) -> None:
    """A second step on the same dataset indices starts from the stored points and runs
    ``warm_steps`` FAB iterations; its points are verified (phi <= 0) and, started at the
    boundary, not farther than a fresh 10-step search's (FAB only keeps closer points)."""
    model, x, y = trained_mlp
    index = torch.arange(100, 100 + x.shape[0])
    obj = create_objective("dyart", **loose(warm_start=True, warm_steps=3))
    first = obj.boundary_points(x, y, state(model, seed=1), index)
    assert first.count > 10
    assert obj._warm is not None and int(obj._warm["has"].sum()) >= first.count
    warm = obj.boundary_points(x, y, state(model, seed=2), index)
    cold = create_objective("dyart", **loose(warm_start=False)).boundary_points(
        x, y, state(model, seed=2), index
    )
    with torch.no_grad():
        phi = soft_margin(model(warm.x_hat), y[warm.index], 5.0)
    assert bool((phi <= 0).all())  # verified boundary crossings
    both = [int(i) for i in set(warm.index.tolist()) & set(first.index.tolist())]
    assert len(both) >= first.count // 2
    r_first = dict(zip(first.index.tolist(), first.radius.tolist(), strict=True))
    r_warm = dict(zip(warm.index.tolist(), warm.radius.tolist(), strict=True))
    # a warm search starts at the stored point (stored in float16: relative error ~1e-3)
    assert all(r_warm[i] <= r_first[i] * (1 + 2e-3) + 1e-6 for i in both)
    assert warm.radius.mean() <= cold.radius.mean() * 1.05  # 5%: different random starts


def test_boundary_search_early_exit() -> None:
    """``drop=(k, radius)``: a radius no point exceeds changes nothing; radius 0 after 0
    iterations stops every search before its first step (from a clean start only the points
    already on the far side, at distance 0, are found)."""
    from robustlab.attacks.boundary import boundary_search
    from robustlab.attacks.threat import make_threat

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.SiLU(), nn.Linear(8, 3)).double()
    x = torch.rand(12, 1, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
    phi = partial(soft_margin, beta=5.0)
    kw = dict(steps=10, random_start=False, refine_steps=0)
    threat = make_threat("linf", 0.3)
    full = boundary_search(model, x, y, phi, threat, **kw)
    same = boundary_search(model, x, y, phi, threat, drop=(3, float("inf")), **kw)
    assert bool(full.found.any())
    assert torch.equal(full.found, same.found) and torch.equal(full.x_boundary, same.x_boundary)
    assert bool((full.distance > 0).any())
    none = boundary_search(model, x, y, phi, threat, drop=(0, 0.0), **kw)
    assert torch.equal(none.found, full.distance == 0)


def test_early_exit_keeps_the_same_points_and_loss(trained_mlp) -> None:
    """DyART's early exit (points with no boundary point within ``drop_factor * r0`` after
    ``drop_after`` iterations stop searching): on a seeded case where points do stop early, the
    kept points, their radii and weights and the loss equal those of the full search."""
    model, x, y = trained_mlp
    rows: list[int] = []
    hook = model.register_forward_pre_hook(lambda m, a: rows.append(a[0].shape[0]))
    out = {}
    for name, drop in (("full", dict(drop_factor=None)), ("early", dict(drop_after=3))):
        obj = create_objective("dyart", **loose(r0=0.05, drop_factor=2.0) | drop)
        rows.clear()
        bb = obj.boundary_points(x, y, state(model, seed=1))
        out[name] = (bb, sum(rows), obj(model, x, y, None, state(model, seed=1))[0])
    hook.remove()
    (full, work_full, loss_full), (early, work_early, loss_early) = out["full"], out["early"]
    assert full.count >= 5  # the case keeps points ...
    assert work_early < 0.9 * work_full  # ... and searches stopped early (946 of 1142 rows)
    assert early.index.tolist() == full.index.tolist()
    # float64; the only difference is the batch composition of the forward passes
    torch.testing.assert_close(early.radius, full.radius, rtol=1e-9, atol=0)
    torch.testing.assert_close(early.weight, full.weight, rtol=1e-9, atol=0)
    torch.testing.assert_close(loss_early, loss_full, rtol=1e-9, atol=0)
