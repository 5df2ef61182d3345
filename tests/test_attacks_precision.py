"""``precision="bf16"``: the attacks' model passes under bf16 autocast, every success decided in
float32. A model that is wrong exactly when it runs in bf16 makes every bf16 claim false, so
an attack that trusted a bf16 pass would report successes; one that confirms in float32 must
report none. On a real model, bf16 runs keep the attack conventions and their successes hold
in float32."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks import AutoAttack, create_attack
from robustlab.attacks.precision import check_precision, float32_rows, passes, use_bf16
from robustlab.errors import RobustlabError

EPS = 0.05


class Bf16Liar(nn.Module):
    """A small CNN whose logits, when its convolution runs in bf16 (under autocast), put class
    ``(y + 1) % 4`` first for every input: every bf16 pass claims a misclassification that a
    float32 pass refutes. The bf16 gradient is the float32 model's."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 6 * 6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        z = self.fc(F.relu(h.float()).flatten(1))
        if h.dtype == torch.bfloat16:  # lie: the runner-up gets a large bonus
            top = z.detach().argmax(1)
            z = z + 100.0 * F.one_hot((top + 1) % 4, 4).to(z.dtype)
        return z


@pytest.fixture
def liar() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = Bf16Liar()
    x = torch.rand(12, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)  # all correct in float32
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert bool((model(x).argmax(1) != y).all())  # and all wrong in bf16
    return model, x, y


def test_check_precision_and_switches() -> None:
    assert check_precision("bf16") == "bf16"
    with pytest.raises(RobustlabError, match="precision must be float32, bf16 or auto"):
        check_precision("fp16")
    cpu = torch.device("cpu")
    assert use_bf16("bf16", cpu) and not use_bf16("float32", cpu)
    with passes(True, cpu):
        assert torch.is_autocast_enabled("cpu")
    with passes(False, cpu):
        assert not torch.is_autocast_enabled("cpu")
    from robustlab.attacks.precision import widened

    assert widened(torch.zeros(2, dtype=torch.bfloat16)).dtype == torch.float32
    assert widened(torch.zeros(2, dtype=torch.float64)).dtype == torch.float64  # kept
    for name in ("apgd-ce", "apgd-t", "fab-t", "square", "autoattack", "fast"):
        with pytest.raises(RobustlabError, match="precision must be"):
            create_attack(name, eps=EPS, precision="half")


def test_float32_rows_are_the_claims_and_near_misses(liar) -> None:
    from robustlab.attacks.precision import undecided

    model, x, y = liar
    logits = torch.tensor([[2.0, 0.0, 0.0], [2.0, 1.99, 0.0], [0.0, 2.0, 0.0], [5.0, 0.0, 4.99]])
    assert undecided(logits, torch.zeros(4, dtype=torch.long)).tolist() == [False, True, True, True]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        zb = model(x)
    rows, z = float32_rows(model, x, zb, y)  # every bf16 pass is a claim
    assert rows.tolist() == list(range(len(y)))
    assert z.dtype == torch.float32 and bool((z.argmax(1) == y).all())


@pytest.mark.parametrize("name", ["apgd-ce", "apgd-t", "fab-t", "square"])
def test_bf16_claims_never_count_without_float32(name: str, liar) -> None:
    """Every bf16 pass says 'misclassified'; at an eps where float32 breaks nothing, the bf16
    attack must return points that float32 classifies correctly (none counted as broken), and
    the clean input where it found no float32 success."""
    model, x, y = liar
    kw = {"n_queries": 30} if name == "square" else {"steps": 5}
    tiny = 1e-4  # far too small to change a float32 prediction on this model
    ref = create_attack(name, eps=tiny, precision="float32", seed=0, **kw)(model, x, y)
    with torch.no_grad():
        assert bool((model(ref).argmax(1) == y).all())
    atk = create_attack(name, eps=tiny, precision="bf16", seed=0, **kw)
    res_x = atk(model, x, y)
    with torch.no_grad():
        assert bool((model(res_x).argmax(1) == y).all())
    res = AutoAttack(eps=tiny, precision="bf16", attacks=[(name, kw)], seed=0).run(model, x, y)
    assert res.robust_accuracy == 1.0
    # The attacks' own success decisions (the checks above hold even for an attack that stops
    # at a false claim): Square spends every query on a point it did not break; FAB's solver
    # finds no point, where a bf16 success test would find every clean point at distance 0.
    if name == "square":
        assert atk.queries.tolist() == [30] * len(y)
    if name == "fab-t":
        from robustlab.attacks import make_threat
        from robustlab.attacks.boundary import boundary_search

        t = (y + 1) % 4
        r = boundary_search(
            model, x, y, None, make_threat("linf", tiny), steps=5, targeted_class=t,
            max_radius=tiny, any_misclassification=True, precision="bf16",
        )  # fmt: skip
        assert not bool(r.found.any())


@pytest.mark.parametrize("targeted", [False, True])
def test_apgd_reports_a_success_only_where_float32_agrees(targeted: bool, liar) -> None:
    """``APGDResult.broken`` under bf16: every bf16 pass of the liar claims a success, so a flag
    set from the bf16 pass alone would mark every row; each flag must hold in float32."""
    from robustlab.attacks import make_threat
    from robustlab.attacks.apgd import apgd, apgd_targeted

    model, x, y = liar
    for eps in (1e-4, 0.1):
        th, g = make_threat("linf", eps), torch.Generator().manual_seed(0)
        if targeted:
            res = apgd_targeted(model, x, y, th, 3, 5, generator=g, precision="bf16")
        else:
            res = apgd(model, x, y, th, 5, generator=g, precision="bf16")
        with torch.no_grad():
            wrong = model(res.x_adv).argmax(1) != y
        assert bool((wrong | ~res.broken).all())
        assert int(res.broken.sum()) == (0 if eps < 1e-3 else int(wrong.sum()))


def test_autoattack_precision_with_an_attack_without_it_is_a_clear_error() -> None:
    with pytest.raises(RobustlabError, match="attack 'pgd' does not take precision"):
        AutoAttack(eps=EPS, attacks=["apgd-ce", "pgd"], precision="bf16")
    AutoAttack(eps=EPS, attacks=["apgd-ce", "pgd"])  # without precision: fine


def test_autoattack_passes_precision_to_every_member() -> None:
    aa = AutoAttack(eps=EPS, precision="bf16")
    assert [a.precision for _, a in aa.attacks] == ["bf16"] * 4
    assert [a.precision for _, a in AutoAttack(eps=EPS).attacks] == ["float32"] * 4
    fast = create_attack("fast", eps=EPS, precision="bf16")
    assert [a.precision for _, a in fast.attacks] == ["bf16"] * 4


@pytest.mark.parametrize("name", ["apgd-ce", "apgd-t", "fab-t"])
def test_bf16_attacks_keep_the_conventions_and_find_float32_successes(name: str) -> None:
    """On a trained-like small CNN at a binding eps: inputs untouched, detached, inside ball and
    box, the caller's mode and BatchNorm statistics kept, no parameter gradient; every point
    the bf16 attack returns as broken is misclassified by the float32 model, and it breaks some."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
        nn.Linear(8 * 8 * 8, 5),
    )  # fmt: skip
    with torch.no_grad():
        model[1].running_var.uniform_(0.5, 1.5)
    model.train()
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(24, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = model.eval()(x).argmax(1)
    model.train()
    x_copy = x.clone()
    kw = {"steps": 20} if name != "fab-t" else {"steps": 20, "n_target_classes": 4}
    if name == "apgd-t":
        kw["n_targets"] = 4
    adv = create_attack(name, eps=0.1, precision="bf16", seed=0, **kw)(model, x, y)
    assert model.training and torch.equal(x, x_copy) and not adv.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in buffers.items())
    assert float((adv - x).abs().max()) <= 0.1 + 1e-6
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    with torch.no_grad():
        broken = model.eval()(adv).argmax(1) != y
    model.train()
    assert int(broken.sum()) > 0
