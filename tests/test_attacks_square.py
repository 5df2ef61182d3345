"""Square Attack: schedule, patterns, attack contract, and strength on standard and TRADES
models."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from attack_models import BNNet
from torch import nn

from robustlab.attacks import create_attack, make_threat
from robustlab.attacks.base import AttackInputError
from robustlab.attacks.square import Square, p_schedule, pseudo_gaussian_pattern
from robustlab.errors import RobustlabError


def test_p_schedule_published_breakpoints() -> None:
    expect = {0: 0.8, 10: 0.8, 11: 0.4, 50: 0.4, 51: 0.2, 201: 0.1, 501: 0.05, 1001: 0.025}
    expect.update({2001: 0.0125, 4001: 0.8 / 128, 6001: 0.8 / 256, 8001: 0.8 / 512})
    for it, p in expect.items():
        assert p_schedule(0.8, it, 10000) == pytest.approx(p), it
    # rescaled to the budget: with 1000 queries, iteration 2 is 20/10000 of the way
    assert p_schedule(0.8, 1, 1000) == pytest.approx(0.8)
    assert p_schedule(0.8, 2, 1000) == pytest.approx(0.4)
    assert p_schedule(0.8, 999, 1000) == pytest.approx(0.8 / 512)


@pytest.mark.parametrize("s", [1, 3, 5, 8])
def test_pseudo_gaussian_pattern(s: int) -> None:
    pat = pseudo_gaussian_pattern(s, torch.device("cpu"), torch.float64)
    assert pat.shape == (s, s)
    assert float(pat.pow(2).sum()) == pytest.approx(1.0)
    assert bool((pat[s // 2 :] < 0).all())
    if s > 1:
        assert bool((pat[: s // 2] > 0).all())
        if s % 2:  # odd sides (the L2 updates) are symmetric left-right
            assert torch.allclose(pat, pat.flip(1))
        centre = pat[s // 2 + (s - s // 2) // 2]
        assert float(centre.abs().argmax()) == (s // 2)  # the bump peaks in the middle


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_square_attack_contract(norm: str, eps: float) -> None:
    model = BNNet(in_channels=3)
    model(torch.rand(16, 3, 8, 8))
    model.eval()
    x = torch.rand(10, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(1)
    y[0] = (y[0] + 1) % 5  # one misclassified clean point: left unchanged
    model.train()
    x_copy, y_copy = x.clone(), y.clone()
    model.modes.clear()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    attack = create_attack("square", eps=eps, norm=norm, n_queries=60, seed=4)
    x_adv = attack(model, x, y)
    assert torch.equal(x, x_copy) and torch.equal(y, y_copy)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    dist = make_threat(norm, eps).distance(x_adv, x)
    assert bool((dist <= eps * (1 + 1e-5)).all())
    assert torch.equal(x_adv[0], x[0])
    assert bool((dist[1:] > 0).all())  # correctly classified points were perturbed
    assert model.modes and not any(model.modes)
    assert model.training and all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert attack.queries is not None and int(attack.queries.max()) <= 60
    assert int(attack.queries[0]) == 0
    again = create_attack("square", eps=eps, norm=norm, n_queries=60, seed=4)(model, x, y)
    assert torch.equal(x_adv, again)
    other = create_attack("square", eps=eps, norm=norm, n_queries=60, seed=5)(model, x, y)
    assert not torch.equal(x_adv, other)


def test_square_bad_arguments() -> None:
    with pytest.raises(RobustlabError, match="linf and l2"):
        Square(eps=1.0, norm="l1")
    with pytest.raises(RobustlabError, match="n_queries"):
        Square(eps=0.1, n_queries=0)
    with pytest.raises(RobustlabError, match="p_init"):
        Square(eps=0.1, p_init=1.5)
    with pytest.raises(AttackInputError):
        Square(eps=0.1)(BNNet(in_channels=3), torch.rand(2, 3, 8, 8) * 2, torch.tensor([0, 1]))
    with pytest.raises(RobustlabError, match="images"):
        Square(eps=0.1)(nn.Linear(4, 2), torch.rand(2, 4), torch.tensor([0, 1]))


@functools.lru_cache(maxsize=1)
def _standard_mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A non-robust MLP trained on the fly on the embedded MNIST slice (about a second)."""
    from robustlab.data import load_split

    s = load_split("mnist-mini", "train")
    x, y = s.images[:4000].float() / 255, s.labels[:4000]
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(784, 48), nn.ReLU(), nn.Linear(48, 10))
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        for i in range(0, len(x), 100):
            loss = nn.functional.cross_entropy(m(x[i : i + 100]), y[i : i + 100])
            opt.zero_grad()
            loss.backward()
            opt.step()
    t = load_split("mnist-mini", "test")
    return m.eval(), t.images[:50].float() / 255, t.labels[:50]


def _acc(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


@pytest.mark.parametrize("norm,eps,bound", [("linf", 0.3, 0.1), ("l2", 3.0, 0.3)])
def test_square_breaks_most_points_of_a_standard_model(norm: str, eps: float, bound: float) -> None:
    model, x, y = _standard_mlp()
    clean = _acc(model, x, y)
    assert clean > 0.8
    x_adv = Square(eps=eps, norm=norm, n_queries=300, seed=0)(model, x, y)
    assert _acc(model, x_adv, y) < bound


def _trades(trades_checkpoint, shared_data, n: int):
    from robustlab.data import load_split
    from robustlab.models import create_model, load_checkpoint

    model = create_model("smallcnn", dataset="mnist")
    load_checkpoint(model, trades_checkpoint)
    s = load_split("mnist", "test", root=shared_data)
    return model.eval(), s.images[:n].float() / 255, s.labels[:n]


def test_square_on_trades_beyond_training_eps(trades_checkpoint, shared_data) -> None:
    """TRADES SmallCNN (trained at Linf 0.3): eps 0.4 is beyond its training radius and Square
    breaks most points within a few hundred queries."""
    model, x, y = _trades(trades_checkpoint, shared_data, 30)
    assert _acc(model, x, y) == 1.0
    x_adv = Square(eps=0.4, n_queries=300, seed=0)(model, x, y)
    assert _acc(model, x_adv, y) < 0.3


@pytest.mark.slow
def test_square_on_trades_at_training_eps(trades_checkpoint, shared_data) -> None:
    """At eps 0.3, 1000 queries on 100 test images break some points, not most (published
    robust accuracy 96.07% under PGD-40; Square measured 92% here)."""
    model, x, y = _trades(trades_checkpoint, shared_data, 100)
    x_adv = Square(eps=0.3, n_queries=1000, seed=0)(model, x, y)
    robust = _acc(model, x_adv, y)
    assert 0.8 <= robust < _acc(model, x, y)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_square_as_strong_as_torchattacks(norm: str, eps: float) -> None:
    """Same budget, same p_init: our robust accuracy is no higher than torchattacks' Square
    (independent implementation) beyond sampling noise."""
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = _standard_mlp()
    ours = _acc(model, Square(eps=eps, norm=norm, n_queries=200, seed=0)(model, x, y), y)
    ref = torchattacks.Square(
        model, norm="Linf" if norm == "linf" else "L2", eps=eps, n_queries=200, p_init=0.8, seed=0
    )
    theirs = _acc(model, ref(x, y), y)
    assert ours < _acc(model, x, y)
    assert ours <= theirs + 0.1


@pytest.mark.parametrize("rescale", [False, True])
def test_p_schedule_matches_reference_for_5000_queries(rescale: bool, shared_root: Path) -> None:
    """p(iteration) for every update of a 5000-query run equals the reference's
    ``SquareAttack.p_selection`` (AutoAttack a392200); AutoAttack builds Square with
    ``resc_schedule=False``, which must not be rescaled to a 10000-query budget."""
    # the reference: make setup installs it wherever ../shared (shared_root) is present
    from autoattack.square import SquareAttack

    ref = SquareAttack(lambda x: x, p_init=0.8, n_queries=5000, resc_schedule=rescale, device="cpu")
    ours = [p_schedule(0.8, it, 5000, rescale=rescale) for it in range(5000)]
    theirs = [ref.p_selection(it) for it in range(5000)]
    assert ours == pytest.approx(theirs, rel=0, abs=0)  # the same halvings: exact
    if not rescale:  # iteration 4500: p = 0.8 / 128, a 3-pixel square on 32x32 images
        assert p_schedule(0.8, 4500, 5000, rescale=False) == pytest.approx(0.8 / 128)
        assert p_schedule(0.8, 4500, 5000, rescale=True) == pytest.approx(0.8 / 512)


def test_autoattack_square_uses_raw_iteration_schedule() -> None:
    from robustlab.attacks.autoattack import PRESETS

    for version in ("standard", "plus"):
        (kw,) = [kw for name, kw in PRESETS[version] if name == "square"]
        assert kw["rescale_schedule"] is False and kw["n_queries"] == 5000
    assert Square(eps=0.1).rescale_schedule is True  # the standalone reference default


@pytest.mark.parametrize("norm,eps", [("linf", 0.3), ("l2", 3.0)])
def test_square_loop_equals_the_reference_formulation(norm: str, eps: float) -> None:
    """The compacted, table-driven loop gives bit-identical adversarial examples and query
    counts to the loop it replaced (tests/square_reference.py), with points leaving the batch
    at different queries (so the compaction is exercised), one misclassified clean point and
    per-sample eps."""
    from square_reference import ReferenceSquare

    model, x, y = _standard_mlp()
    x, y = x[:24], y[:24].clone()
    y[3] = (y[3] + 1) % 10  # misclassified on the clean input
    eps_t = torch.full((24,), eps)
    eps_t[::3] *= 0.5  # per-sample eps
    for e in (eps, eps_t):
        kw = {"eps": e, "norm": norm, "n_queries": 120, "seed": 7, "rescale_schedule": False}
        new, ref = Square(**kw), ReferenceSquare(**kw)
        adv_new, adv_ref = new(model, x, y), ref(model, x, y)
        assert torch.equal(adv_new, adv_ref)
        assert torch.equal(new.queries, ref.queries)
        q = new.queries
        # not vacuous: some points left early, at different queries, and some stayed robust
        assert int(q[3]) == 0 and int((q == 120).sum()) >= 1
        assert len(set(q[(q > 1) & (q < 120)].tolist())) >= 3
    # eps below 1e-5: Linf's "the square would not change" is the 1e-7 test, not equality
    kw = {"eps": 1e-6, "norm": norm, "n_queries": 30, "seed": 7, "rescale_schedule": False}
    assert torch.equal(Square(**kw)(model, x, y), ReferenceSquare(**kw)(model, x, y))


class _FirstChannel(nn.Module):
    """Classifies the first channel of a 3-channel image with the MNIST MLP (exact in any
    memory format: no reduction over channels)."""

    def __init__(self, mlp: nn.Module) -> None:
        super().__init__()
        self.mlp = mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x[:, :1])


def test_square_channels_last_input_gives_the_same_result() -> None:
    mlp, x, y = _standard_mlp()
    model = _FirstChannel(mlp).eval()
    x = torch.cat([x[:12], x[12:24], x[24:36]], 1)  # (12, 3, 28, 28)
    y = y[:12]
    a = Square(eps=0.2, n_queries=40, seed=1)(model, x, y)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    b = Square(eps=0.2, n_queries=40, seed=1)(model, x_cl, y)
    assert torch.equal(a, b)  # same draws, same decisions: exact
    # the Linf step reads and writes squares through (n, c, h*w) views of its images: the
    # reference formulation (whole-image indexing) agrees in every layout, a strided one too
    from square_reference import ReferenceSquare

    x_strided = torch.cat([x, x], 3)[:, :, :, :28]
    assert not x_strided.is_contiguous()
    ref = ReferenceSquare(eps=0.2, n_queries=40, seed=1, rescale_schedule=True)(model, x, y)
    assert torch.equal(a, ref)
    assert torch.equal(Square(eps=0.2, n_queries=40, seed=1)(model, x_strided, y), ref)


@pytest.mark.parametrize("norm,eps", [("linf", 0.3), ("l2", 3.0)])
def test_square_budgets_cap_each_points_queries(norm: str, eps: float) -> None:
    model, x, y = _standard_mlp()
    x, y = x[:16], y[:16]
    x_copy = x.clone()
    sq = Square(eps=eps, norm=norm, n_queries=80, seed=3)
    full = sq(model, x, y)
    q_full = sq.queries.clone()
    # every point at n_queries: the unbudgeted run, bit for bit
    same = sq.attack_with_budgets(model, x, y, torch.full((16,), 80))
    assert torch.equal(same, full) and torch.equal(sq.queries, q_full)
    budgets = torch.tensor([1, 2, 5, 10, 40, 80, 3, 7] * 2)
    adv = sq.attack_with_budgets(model, x, y, budgets)
    q = sq.queries
    assert bool((q <= budgets).all())
    with torch.no_grad():
        robust = model(adv).argmax(1) == y
        clean = model(x).argmax(1) == y
    # a point still correct spent exactly its budget; one that stopped early is broken
    assert torch.equal(q[robust & clean], budgets[robust & clean])
    assert bool((~robust[clean & (q < budgets)]).all())
    assert bool((robust & clean).any()) and bool((clean & (q < budgets)).any())  # not vacuous
    assert torch.equal(x, x_copy) and not adv.requires_grad
    assert bool((make_threat(norm, eps).distance(adv, x) <= eps * (1 + 1e-5)).all())
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert sq._budgets is None  # the next plain call is unbudgeted again
    with pytest.raises(RobustlabError, match="budgets"):
        sq.attack_with_budgets(model, x, y, torch.full((16,), 81))
    with pytest.raises(RobustlabError, match="budgets"):
        sq.attack_with_budgets(model, x, y, torch.full((15,), 5))
