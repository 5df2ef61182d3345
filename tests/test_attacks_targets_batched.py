"""APGD-T and FAB-T with their targets batched side by side ((targets x points) rows, as on an
accelerator) break exactly the points that running the targets one after another breaks, and
keep the attack conventions (detached, inside ball and box, inputs untouched, mode restored)."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks import create_attack, make_threat

EPS = 0.03  # binding on this model: about half the points break (asserted below)


class TinyCNN(nn.Module):
    """Conv + BatchNorm + ReLU + linear head, 6 classes, float64 (rounding out of the way)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 6 * 6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.bn(self.conv(x))).flatten(1)) * 4.0


@pytest.fixture
def setup() -> tuple[TinyCNN, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = TinyCNN().double()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        model.bn.running_mean.uniform_(-0.1, 0.1)
        model.bn.running_var.uniform_(0.5, 1.5)
    model.train()  # the caller's mode, to be restored
    x = torch.rand(20, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model.eval()(x).argmax(1)  # every point correct: all are attacked
    model.train()
    return model, x, y


def _broken(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x_adv).argmax(1) != y


def _one_by_one_and_batched(name: str) -> tuple[dict, dict]:
    if name == "apgd-t":  # target_batch: targets per APGD call (5 = all at once)
        kw = {"steps": 10, "n_targets": 5}
        return {**kw, "target_batch": 1}, {**kw, "target_batch": 5}
    return {"steps": 10, "n_target_classes": 5}, {"steps": 10, "n_target_classes": 5}


@pytest.mark.parametrize("name", ["apgd-t", "fab-t"])
def test_batched_targets_break_the_same_points(name: str, setup) -> None:
    model, x, y = setup
    kw_seq, kw_bat = _one_by_one_and_batched(name)
    seq = create_attack(name, eps=EPS, seed=4, **kw_seq)
    bat = create_attack(name, eps=EPS, seed=4, **kw_bat)
    if name == "fab-t":
        seq.max_batch_rows = 1  # one target per solver call
        bat.max_batch_rows = 4096  # the accelerator default: the other 4 targets in one call
    a_seq, a_bat = seq(model, x, y), bat(model, x, y)
    b_seq, b_bat = _broken(model, a_seq, y), _broken(model, a_bat, y)
    assert 0 < int(b_seq.sum()) < x.shape[0]  # eps is binding: the comparison means something
    # every target still runs on every point it must, from the same start (per-target seeds):
    # the same points break, whatever the batching
    assert torch.equal(b_bat, b_seq)
    # where no target breaks a point, the same runs leave the same highest-loss point (APGD-T:
    # the starts do not depend on the batching; FAB-T has no random start with 1 restart);
    # 1e-12 in float64: only the summation order of a batch of another size differs
    keep = ~b_seq
    assert torch.allclose(a_bat[keep], a_seq[keep], atol=1e-12, rtol=0)
    if name == "fab-t":  # deterministic: the same points everywhere
        assert torch.allclose(a_bat, a_seq, atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", ["apgd-t", "fab-t"])
def test_batched_targets_keep_the_conventions(name: str, setup) -> None:
    model, x, y = setup
    x_in, y_in = x.clone(), y.clone()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    attack = create_attack(name, eps=EPS, seed=4, **_one_by_one_and_batched(name)[1])
    if name == "fab-t":
        attack.max_batch_rows = 4096
    x_adv = attack(model, x, y)
    assert torch.equal(x, x_in) and torch.equal(y, y_in)  # inputs untouched
    assert not x_adv.requires_grad and x_adv.grad_fn is None
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    dist = make_threat("linf", EPS).distance(x_adv, x)
    assert bool((dist <= EPS * (1 + 1e-9)).all()), float(dist.max())
    assert model.training and all(m.training for m in model.modules())  # mode restored
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k  # BatchNorm statistics untouched
    assert torch.equal(attack(model, x, y), x_adv)  # seeded


def test_apgd_t_starts_do_not_depend_on_the_target_batching(setup, monkeypatch) -> None:
    """Each (point, target) run starts from the same random point whatever ``target_batch``
    (CPUs and GPUs batch differently by default): seeds per target, not per call."""
    apgd_mod = importlib.import_module("robustlab.attacks.apgd")  # the package shadows it

    model, x, y = setup
    model.eval()
    starts: dict[int, dict[tuple[int, int], torch.Tensor]] = {}
    real = apgd_mod.apgd
    for tb in (1, 5):
        seen = starts.setdefault(tb, {})

        def spy(m, xs, ys, th, *a, _seen=seen, **k):  # type: ignore[no-untyped-def]
            for row, t, s in zip(xs, k["y_target"].tolist(), k["x_init"], strict=True):
                i = int((x - row).flatten(1).abs().sum(1).argmin())  # which point this row is
                _seen[(i, t)] = s.clone()
            return real(m, xs, ys, th, *a, **k)

        monkeypatch.setattr(apgd_mod, "apgd", spy)
        gen = torch.Generator().manual_seed(7)
        apgd_mod.apgd_targeted(model, x, y, make_threat("linf", EPS), 5, 3, generator=gen,
                               target_batch=tb)  # fmt: skip
    common = set(starts[1]) & set(starts[5])
    assert len(common) >= x.shape[0]  # every point's first target at least
    assert all(torch.equal(starts[1][key], starts[5][key]) for key in common)
