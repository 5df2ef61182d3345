"""The ``fast`` preset: MALT target ranking, Square on the closest points only, bf16 Square
queries whose every success holds in float32."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from attack_models import linear_model
from torch import nn

from robustlab.attacks import FastAttack, create_attack, make_threat
from robustlab.attacks.fast import malt_targets, normalized_margin
from robustlab.attacks.square import Square
from robustlab.errors import RobustlabError
from robustlab.models import create_model, load_checkpoint


def test_malt_ranks_targets_by_linearised_distance_not_by_logit() -> None:
    # A linear model: MALT's criterion is the exact Linf distance to each pairwise boundary,
    # (z_y - z_k) / ||w_y - w_k||_1, which need not follow the logit order.
    torch.manual_seed(0)
    model = linear_model(30, 6, seed=2)
    x = torch.rand(40, 30, dtype=torch.float64)
    y = model(x).argmax(1)
    th = make_threat("linf", 0.1)
    got = malt_targets(model, x, y, th, n_targets=5, candidates=5)
    w, z = model.weight.detach(), model(x).detach()
    for i in range(40):
        others = [k for k in range(6) if k != int(y[i])]
        dist = {k: float((z[i, y[i]] - z[i, k]) / (w[y[i]] - w[k]).abs().sum()) for k in others}
        assert got[i].tolist() == sorted(others, key=dist.get)
    logit_order = z.scatter(1, y[:, None], float("-inf")).argsort(1, descending=True)[:, :5]
    assert bool((got != logit_order).any())  # the ranking differs from logit order somewhere


def test_malt_apgd_t_attacks_malts_targets_in_cpu_sized_passes(monkeypatch) -> None:
    """apgd-t-malt runs targeted APGD against MALT's targets, nearest first (not the logit
    order), and no model pass is wider than APGD-T's 128 CPU rows although 100 points x 3
    targets are 300 rows."""
    import importlib

    apgd_mod = importlib.import_module("robustlab.attacks.apgd")  # the package shadows it
    model = linear_model(30, 6, seed=2)
    x = torch.rand(100, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(1)
    th = make_threat("linf", 0.01)  # small: few points break, every target gets its turn
    want = malt_targets(model, x, y, th, n_targets=3, candidates=20)
    tried: dict[tuple[int, int], int] = {}
    widest = [0]
    real_apgd = apgd_mod.apgd

    def spy(m, xs, ys, t, *a, **k):  # type: ignore[no-untyped-def]
        for row, tgt in zip(xs, k["y_target"].tolist(), strict=True):
            i = int((x - row).abs().sum(1).argmin())
            tried[(i, tgt)] = tried.get((i, tgt), 0) + 1
        return real_apgd(m, xs, ys, t, *a, **k)

    class Counting(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            widest[0] = max(widest[0], z.shape[0])
            return self.inner(z)

    monkeypatch.setattr(apgd_mod, "apgd", spy)
    attack = create_attack("apgd-t-malt", eps=0.01, steps=5, n_targets=3)
    x_adv = attack(Counting(), x, y)
    assert widest[0] <= 128
    with torch.no_grad():
        broken = model(x_adv).argmax(1) != y
    for i in range(100):  # a point leaves at its first success: later targets are skipped
        firsts = want[i].tolist()
        got = [t for t in firsts if (i, t) in tried]
        assert got == firsts[: len(got)] and got, (i, got, firsts)
        assert len(got) == 3 or bool(broken[i])
        assert all((i, t) not in tried for t in range(6) if t not in firsts)


def test_normalized_margin_is_negative_exactly_when_misclassified() -> None:
    z = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 1.0, 0.5]])
    m = normalized_margin(z, torch.tensor([0, 0]))
    assert m[0] == pytest.approx(2.0 / 3.0)  # (3 - 1) / (3 - 0)
    assert m[1] == pytest.approx(-2.0 / 1.5)  # (0 - 2) / (2 - 0.5)


@pytest.fixture(scope="module")
def trades(trades_checkpoint: Path) -> nn.Module:
    model = create_model("smallcnn", dataset="mnist")
    load_checkpoint(model, trades_checkpoint)
    return model.eval()


def _mnist(shared_data: Path, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    from robustlab.data import load_split

    sp = load_split("mnist", "test", root=shared_data)
    return sp.images[:n].float() / 255.0, sp.labels[:n].long()


def test_bf16_square_successes_hold_in_float32(trades: nn.Module, shared_data: Path) -> None:
    x, y = _mnist(shared_data, 16)
    sq = Square(eps=0.4, n_queries=150, precision="bf16", seed=0)
    adv = sq(trades, x, y)
    stopped = sq.queries < 150  # the attack stopped these points: it claimed a success
    with torch.no_grad():
        wrong = trades(adv).argmax(1) != y
        clean_ok = trades(x).argmax(1) == y
    assert bool((stopped & clean_ok).any())  # not vacuous: some points broken at eps 0.4
    assert bool(wrong[stopped & clean_ok].all())  # every claimed success is one in float32


def test_fast_runs_square_only_on_the_closest_points(trades: nn.Module, shared_data) -> None:
    x, y = _mnist(shared_data, 24)
    atk = FastAttack(eps=0.3, steps=5, n_targets=2, n_queries=20, square_fraction=0.25)
    res = atk.run(trades, x, y)
    rec = {p["attack"]: p for p in res.per_attack}
    assert list(rec) == ["apgd-ce", "apgd-t-malt", "apgd-t-close", "square-close"]
    survivors = rec["apgd-t-close"]["attacked"] - rec["apgd-t-close"]["broken"]
    assert rec["square-close"]["attacked"] == survivors
    assert isinstance(create_attack("fast", eps=0.3), FastAttack)
    adv_dist = (res.x_adv - x).abs().flatten(1).amax(1)
    assert float(adv_dist.max()) <= 0.3 + 1e-6
    assert bool((res.robust_correct <= res.clean_correct).all())


def test_presets_run_square_in_float32_by_default() -> None:
    """bf16 queries change Square's search path (they can miss points), so no preset that must
    be no weaker than the reference uses them unless asked."""
    from robustlab.attacks.autoattack import PRESETS

    for version in ("standard", "plus"):
        squares = [kw for name, kw in PRESETS[version] if name == "square"]
        assert squares and all(kw["precision"] == "float32" for kw in squares)
    squares = [a for _, a in FastAttack(eps=0.3).attacks if isinstance(a, Square)]
    assert squares and all(a.precision == "float32" for a in squares)


def test_square_budget_scales_with_closeness() -> None:
    fast = FastAttack(eps=0.3, n_queries=5000, full_margin=0.1)
    b = fast.square_budgets(torch.tensor([1e-6, 0.05, 0.1, 0.2, 0.5, 10.0, 1e6]))
    assert b.tolist() == [5000, 5000, 5000, 2500, 1000, 50, 1]


def test_fast_spends_square_budgets_on_the_closest_fraction(trades: nn.Module, shared_data) -> None:
    """Square-close attacks ceil(square_fraction * survivors) points, the closest by the
    DLR-normalised margin, each with at most its budget; fast is no weaker than its first
    stage alone (the same APGD-CE call on the same points)."""
    from robustlab.attacks.apgd import APGD

    x, y = _mnist(shared_data, 24)
    x_copy = x.clone()
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    atk = FastAttack(eps=0.3, steps=5, n_targets=2, n_queries=40, square_fraction=0.25)
    sq = [a for _, a in atk.attacks if isinstance(a, Square)][0]
    orig = sq.attack_with_budgets

    def spy(model, xc, yc, budgets):
        out = orig(model, xc, yc, budgets)
        calls.append((budgets.clone(), sq.queries.clone()))
        return out

    sq.attack_with_budgets = spy  # type: ignore[method-assign]
    res = atk.run(trades, x, y)
    rec = {p["attack"]: p for p in res.per_attack}
    survivors = rec["apgd-t-close"]["attacked"] - rec["apgd-t-close"]["broken"]
    assert survivors >= 4  # not vacuous
    budgets = torch.cat([b for b, _ in calls])
    queries = torch.cat([q for _, q in calls])
    assert budgets.numel() == -(-survivors // 4)  # ceil(0.25 * survivors)
    assert bool((queries <= budgets).all()) and bool((budgets >= 1).all())
    assert torch.equal(x, x_copy)
    assert float((res.x_adv - x).abs().amax()) <= 0.3 + 1e-6
    # the first 24 test images are all correct: fast's APGD-CE stage is this very call
    ce = APGD(eps=0.3, steps=5, loss="ce", seed=0)(trades, x, y)
    with torch.no_grad():
        ce_robust = trades(ce).argmax(1) == y
    assert bool((res.robust_correct <= ce_robust).all())


def test_closest_picks_the_smallest_margins_in_index_order() -> None:
    margin = torch.tensor([0.5, -1.0, 0.1, 0.3, 0.1, 2.0, 0.05])
    todo = torch.tensor([0, 2, 3, 4, 5, 6])  # point 1 is already broken
    assert FastAttack.closest(todo, margin, 0.5).tolist() == [2, 4, 6]  # ceil(3): 0.05, 0.1, 0.1
    assert FastAttack.closest(todo, margin, 0.3).tolist() == [2, 6]  # ties: the earlier index
    assert FastAttack.closest(todo, margin, 0.0).numel() == 0
    assert FastAttack.closest(todo, margin, 1.0).tolist() == todo.tolist()
    thirty = torch.arange(30)
    assert FastAttack.closest(thirty, torch.rand(30), 0.1).numel() == 3  # 0.1 * 30 > 3 in floats


def test_fast_restarts_apgd_t_on_the_closest_survivors(trades: nn.Module, shared_data) -> None:
    """apgd-t-close runs MALT's targets again, from the next seed's random starts, on the
    ceil(restart_fraction * survivors) points closest to the boundary; 0 drops the stage."""
    from robustlab.attacks.fast import MALTAPGDT

    x, y = _mnist(shared_data, 24)
    atk = FastAttack(eps=0.3, steps=5, n_targets=2, n_queries=20, restart_fraction=0.3, seed=4)
    first, again = (a for _, a in atk.attacks if isinstance(a, MALTAPGDT))
    assert (first.seed, again.seed) == (4, 5)
    seen: list[int] = []
    orig = again.perturb

    def spy(model, xc, yc, generator):
        seen.append(xc.shape[0])
        return orig(model, xc, yc, generator)

    again.perturb = spy  # type: ignore[method-assign]
    rec = {p["attack"]: p for p in atk.run(trades, x, y).per_attack}
    survivors = rec["apgd-t-malt"]["attacked"] - rec["apgd-t-malt"]["broken"]
    assert survivors >= 4  # not vacuous
    assert rec["apgd-t-close"]["attacked"] == survivors
    assert sum(seen) == -(-3 * survivors // 10)  # ceil(0.3 * survivors)
    off = FastAttack(eps=0.3, restart_fraction=0)
    assert [a for a, _ in off.attacks] == ["apgd-ce", "apgd-t-malt", "square-close"]
    for bad in (-0.1, 1.5, True):
        with pytest.raises(RobustlabError, match="restart_fraction"):
            FastAttack(eps=0.3, restart_fraction=bad)


def test_fast_can_rank_malt_targets_at_the_apgd_ce_points(
    trades: nn.Module, shared_data: Path, monkeypatch
) -> None:
    """malt_point="apgd-ce": both MALT stages rank their targets at APGD-CE's best-loss points
    (the stage's own call, recomputed here), not at the clean images; "clean" ranks at x."""
    import importlib

    from robustlab.attacks.apgd import APGD
    from robustlab.attacks.fast import MALTAPGDT

    fast_mod = importlib.import_module("robustlab.attacks.fast")
    x, y = _mnist(shared_data, 24)  # all 24 correct: APGD-CE runs on them in one chunk
    ce = APGD(eps=0.3, steps=5, loss="ce", seed=0)(trades, x, y)
    ranked_at: list[torch.Tensor] = []
    real = fast_mod.malt_targets

    def spy(model, xs, *a, **k):  # type: ignore[no-untyped-def]
        ranked_at.append(xs.clone())
        return real(model, xs, *a, **k)

    monkeypatch.setattr(fast_mod, "malt_targets", spy)
    for point, want in (("apgd-ce", ce), ("clean", x)):
        ranked_at.clear()
        atk = FastAttack(eps=0.3, steps=5, n_targets=2, n_queries=20, restart_fraction=0.3,
                         malt_point=point)  # fmt: skip
        atk.run(trades, x, y)
        assert len(ranked_at) == 2  # apgd-t-malt and apgd-t-close
        for xs in ranked_at:  # each row is one of the expected points
            dist = (xs[:, None] - want[None]).flatten(2).abs().amax(2).amin(1)
            assert float(dist.max()) == 0.0
    assert not torch.equal(ce, x)  # not vacuous: the two rankings look at different points
    with pytest.raises(RobustlabError, match="malt_point"):
        FastAttack(eps=0.3, malt_point="x_adv")
    with pytest.raises(RobustlabError, match="anchor"):
        MALTAPGDT(eps=0.3).attack_ranked(trades, x, y, x[:3])
