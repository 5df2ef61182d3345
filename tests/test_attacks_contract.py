"""The attack contract for every gradient attack and ensemble, bad input, and analytic worst
cases on linear classifiers (FGSM/PGD/APGD must reach the exact maximizer of the loss)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks import (
    AttackInputError,
    AutoAttack,
    create_attack,
    make_threat,
)
from robustlab.attacks.apgd import apgd_checkpoints
from robustlab.attacks.pgd import step_schedule
from robustlab.errors import RobustlabError


class Recorder(nn.Module):
    """A small CNN with BatchNorm and Dropout that records its mode at every forward."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(6 * 8 * 8, classes)
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        h = self.drop(F.relu(self.bn(self.conv(x))))
        return self.fc(h.flatten(1)) * 3.0


ATTACKS = {
    "fgsm": {},
    "fgsm-rand": {"random_start": True},
    "pgd": {"steps": 5, "restarts": 2},
    "pgd-margin-targeted": {"steps": 5, "loss": "margin", "targeted": True, "target": "random"},
    "pgd-dlr-cosine-es": {"steps": 5, "loss": "dlr", "schedule": "cosine", "early_stop": True},
    "apgd-ce": {"steps": 6, "restarts": 2},
    "apgd-dlr": {"steps": 6},
    "apgd-t": {"steps": 6, "n_targets": 3},
    "apgd-t-malt": {"steps": 6, "n_targets": 2},
    "fast": {"steps": 4, "n_targets": 2, "n_queries": 30, "square_fraction": 0.5},
    "autoattack": {
        "attacks": [("apgd-ce", {"steps": 4}), ("apgd-t", {"steps": 4, "n_targets": 2})]
    },
}


def _make(key: str, norm: str = "linf", seed: int = 0, eps: float = 0.1):
    name = key.split("-rand")[0] if key.startswith("fgsm") else key
    if name.startswith("pgd"):
        name = "pgd"
    return create_attack(name, eps=eps, norm=norm, seed=seed, **ATTACKS[key])


@pytest.fixture
def setup() -> tuple[Recorder, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = Recorder()
    model.train()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        model.bn.running_mean.uniform_(-0.1, 0.1)
        model.bn.running_var.uniform_(0.5, 1.5)
    x = torch.rand(12, 1, 8, 8)
    x[0] = 0.0  # box constraints active
    x[1] = 1.0
    y = torch.randint(0, 5, (12,))
    return model, x, y


@pytest.mark.parametrize("key", list(ATTACKS))
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_contract(key: str, norm: str, setup) -> None:
    model, x, y = setup
    eps = 0.1 if norm == "linf" else 0.5
    x_in, y_in = x.clone(), y.clone()
    bn_before = {k: v.clone() for k, v in model.state_dict().items()}
    attack = _make(key, norm, seed=3, eps=eps)
    model.modes.clear()
    x_adv = attack(model, x, y)
    # inputs untouched, result detached and shaped like x, inside ball and box
    assert torch.equal(x, x_in) and torch.equal(y, y_in)
    assert not x_adv.requires_grad and x_adv.grad_fn is None
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    dist = make_threat(norm, eps).distance(x_adv, x)
    assert bool((dist <= eps * (1 + 1e-5)).all()), float(dist.max())
    # eval mode during the attack, caller's mode restored, no grads, BN untouched
    assert model.modes and not any(model.modes)
    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, bn_before[k]), k
    # seeded: same seed, same result
    again = _make(key, norm, seed=3, eps=eps)(model, x, y)
    assert torch.equal(x_adv, again)


@pytest.mark.parametrize("key", ["pgd", "apgd-ce", "apgd-t"])
def test_attacks_move_points_and_seed_matters(key: str, setup) -> None:
    model, x, y = setup
    a = _make(key, seed=1)(model, x, y)
    b = _make(key, seed=2)(model, x, y)
    assert float((a - x).abs().max()) > 0.01
    assert not torch.equal(a, b)  # random starts come from the seed


def test_eval_mode_restored_when_model_was_in_eval(setup) -> None:
    model, x, y = setup
    model.eval()
    _make("pgd")(model, x, y)
    assert not model.training


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", ["fgsm", "pgd", "apgd-ce", "apgd-t", "autoattack"])
def test_bad_eps_and_norm(name: str) -> None:
    for eps in (0.0, -1.0, float("nan"), "abc"):
        with pytest.raises(RobustlabError, match="eps"):
            create_attack(name, eps=eps)
    with pytest.raises(RobustlabError, match="unknown norm"):
        create_attack(name, eps=0.1, norm="l3")


def test_unknown_names_and_parameters() -> None:
    with pytest.raises(RobustlabError, match="unknown attack 'nope'"):
        create_attack("nope", eps=0.1)
    with pytest.raises(RobustlabError, match="unknown attack loss"):
        create_attack("pgd", eps=0.1, loss="hinge")
    with pytest.raises(RobustlabError, match="schedule"):
        create_attack("pgd", eps=0.1, schedule="exp")
    with pytest.raises(RobustlabError, match="steps"):
        create_attack("pgd", eps=0.1, steps=0)
    with pytest.raises(RobustlabError, match="restarts"):
        create_attack("apgd-ce", eps=0.1, restarts=0)
    with pytest.raises(RobustlabError, match="version"):
        create_attack("autoattack", eps=0.1, version="turbo")
    with pytest.raises(RobustlabError, match="l1"):
        create_attack("apgd-ce", eps=0.1, norm="l1")


@pytest.mark.parametrize("name", ["fgsm", "pgd", "apgd-ce", "apgd-t"])
def test_bad_inputs(name: str, setup) -> None:
    model, x, y = setup
    attack = (
        create_attack(name, eps=0.1, steps=2) if name != "fgsm" else create_attack(name, eps=0.1)
    )
    with pytest.raises(AttackInputError, match=r"\[0, 1\]"):
        attack(model, x * 2.0 + 0.5, y)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(AttackInputError, match="NaN"):
        attack(model, bad, y)
    with pytest.raises(AttackInputError, match=r"labels must be in \[0, 5\)"):
        attack(model, x, torch.full_like(y, 7))
    with pytest.raises(AttackInputError, match="lengths must match"):
        attack(model, x, y[:-1])
    with pytest.raises(AttackInputError, match="floating point"):
        attack(model, (x * 255).to(torch.uint8), y)


def test_apgd_t_needs_four_classes() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with pytest.raises(RobustlabError, match="at least 4 classes"):
        create_attack("apgd-t", eps=0.1, steps=2)(
            model, torch.rand(2, 1, 2, 2), torch.tensor([0, 1])
        )


# ----------------------------------------------------------------------------- schedules


def test_apgd_checkpoints_match_the_paper() -> None:
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), times 100 steps
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert apgd_checkpoints(1) == [1]


def test_step_schedules() -> None:
    assert step_schedule(0.1, 4, "constant") == [0.1] * 4
    assert step_schedule(0.1, 4, "step") == [0.1, 0.1, 0.05, 0.025]
    cos = step_schedule(0.1, 4, "cosine")
    assert cos[0] == pytest.approx(0.1) and cos == sorted(cos, reverse=True)
    assert step_schedule(1.0, 4, "linear") == [1.0, 0.75, 0.5, 0.25]


# ----------------------------------------------------------------------------- analytic


class Linear2(nn.Module):
    """Binary linear classifier: logits (0, w.x + b)."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(w.flatten().clone())
        self.b = nn.Parameter(torch.tensor(b))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(s), s], 1)


def _linear_case() -> tuple[Linear2, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(1, 4, 5, generator=g)
    x = 0.4 + 0.2 * torch.rand(6, 1, 4, 5, generator=g)  # box inactive for eps <= 0.4
    model = Linear2(w, b=-float((x.flatten(1) @ w.flatten()).mean()) - 5.0)
    y = torch.zeros(6, dtype=torch.long)  # class 0; the attack raises w.x
    return model, x, y, w


def _ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return F.cross_entropy(model(x), y, reduction="none")


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", ["fgsm", "pgd", "apgd-ce"])
def test_linear_worst_case_is_exact(name: str, norm: str) -> None:
    model, x, y, w = _linear_case()
    eps = 0.05 if norm == "linf" else 0.3
    direction = w.sign() if norm == "linf" else w / w.norm()
    x_star = x + eps * direction  # the exact maximizer of CE over the ball (box inactive)
    kw = {} if name == "fgsm" else {"steps": 20}
    if name == "pgd":
        kw.update(step_size=eps / 4, random_start=False)
    x_adv = create_attack(name, eps=eps, norm=norm, **kw)(model, x, y)
    # APGD's L2 iterates from a random start approach the sphere point geometrically
    atol, rtol = (1e-3, 1e-4) if (name, norm) == ("apgd-ce", "l2") else (1e-5, 1e-5)
    assert torch.allclose(x_adv, x_star, atol=atol)
    assert torch.allclose(_ce(model, x_adv, y), _ce(model, x_star, y), rtol=rtol)
    # and nothing in the ball does better (random points never exceed it)
    th = make_threat(norm, eps)
    for _ in range(5):
        r = th.random_start(x)
        assert bool((_ce(model, r, y) <= _ce(model, x_star, y) + 1e-6).all())


def test_linear_margin_loss_and_targeted_reach_the_same_corner() -> None:
    model, x, y, w = _linear_case()
    eps = 0.05
    x_star = x + eps * w.sign()
    a = create_attack("pgd", eps=eps, steps=20, step_size=0.02, loss="margin", random_start=False)
    assert torch.allclose(a(model, x, y), x_star, atol=1e-6)
    t = create_attack("pgd", eps=eps, steps=20, step_size=0.02, targeted=True, random_start=False)
    assert torch.allclose(t(model, x, y), x_star, atol=1e-6)  # target 1 = the only other class


def test_linear_analytic_robust_accuracy() -> None:
    # points with margin below eps*|w|_1 must all be broken, the others cannot be
    model, x, y, w = _linear_case()
    eps = 0.05
    with torch.no_grad():
        s = x.flatten(1) @ model.w + model.b  # < 0: class 0
        model.b -= s.median() + eps * w.abs().sum()  # points above the median are breakable
        s = x.flatten(1) @ model.w + model.b
    assert bool((s < 0).all())  # all correct on clean inputs
    breakable = (s + eps * w.abs().sum()) > 0
    x_adv = create_attack("pgd", eps=eps, steps=10, step_size=0.02)(model, x, y)
    with torch.no_grad():
        broken = model(x_adv).argmax(1) != y
    assert torch.equal(broken, breakable)
    assert int(breakable.sum()) == 3


# ----------------------------------------------------------------------------- ensemble


def test_ensemble_keeps_worst_case_and_records_breaker(setup) -> None:
    model, x, y = setup
    aa = AutoAttack(
        eps=0.3,
        attacks=[
            ("fgsm", {}),
            ("apgd-ce", {"steps": 10}),
            ("apgd-t", {"steps": 10, "n_targets": 2}),
        ],
    )
    res = aa.run(model, x, y)
    assert res.attacks == ["fgsm", "apgd-ce", "apgd-t"]
    with torch.no_grad():
        pred_clean = model.eval()(x).argmax(1)
        pred_adv = model(res.x_adv).argmax(1)
    model.train()
    assert torch.equal(res.clean_correct, pred_clean == y)
    assert torch.equal(res.robust_correct, pred_adv == y)  # the returned points realise it
    assert bool((res.broken_by[~res.clean_correct] == -1).all())
    assert bool((res.broken_by[res.clean_correct & ~res.robust_correct] >= 0).all())
    # each later attack only saw the points the earlier ones left
    pa = res.per_attack
    assert pa[0]["attacked"] == int(res.clean_correct.sum())
    for a, b in zip(pa, pa[1:], strict=False):
        assert b["attacked"] == a["attacked"] - a["broken"]
    assert res.robust_accuracy == pytest.approx(pa[-1]["robust_accuracy_after"])


def test_autoattack_presets() -> None:
    std = create_attack("autoattack-standard", eps=8 / 255)
    assert [a for a, _ in std.attacks] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    ce, t = std.attacks[0][1], std.attacks[1][1]
    assert ce.steps == 100 and ce.restarts == 1 and t.steps == 100 and t.n_targets == 9
    fab_t, sq = std.attacks[2][1], std.attacks[3][1]
    assert fab_t.n_target_classes == 9 and sq.n_queries == 5000
    plus = create_attack("autoattack", eps=8 / 255, version="plus")
    assert [a for a, _ in plus.attacks] == [
        "apgd-ce",
        "apgd-dlr",
        "fab",
        "square",
        "apgd-t",
        "fab-t",
    ]
    assert plus.attacks[0][1].restarts == 5 and plus.attacks[1][1].restarts == 5
    assert plus.repeats[3] == 5
    rand = create_attack("autoattack-rand", eps=8 / 255)
    assert [a for a, _ in rand.attacks] == ["apgd-ce", "apgd-dlr"]
    assert all(a.eot_iter == 20 for _, a in rand.attacks)


class Noisy(nn.Module):
    """A randomized model: Gaussian noise on the input at every forward (eval mode too)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc((x + 0.05 * torch.randn_like(x)).flatten(1)) * 5.0


def test_autoattack_rand_uses_eot_on_a_randomized_model() -> None:
    torch.manual_seed(0)
    model, x = Noisy(), torch.rand(10, 1, 8, 8)
    with torch.no_grad():
        y = model.fc(x.flatten(1)).argmax(1)
    calls = []
    model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    aa = create_attack("autoattack-rand", eps=0.002, steps=3)
    res = aa.run(model, x, y)
    # 20 forward passes per gradient: (1 start + 3 steps) x 20 per APGD run at least
    assert len(calls) >= 4 * 20
    assert make_threat("linf", 0.002).distance(res.x_adv, x).max() <= 0.002 + 1e-6
    assert res.robust_accuracy <= res.clean_accuracy


@pytest.mark.parametrize("version", ["standard", "plus"])
def test_autoattack_presets_run_end_to_end(version: str, setup) -> None:
    model, x, y = setup
    aa = create_attack("autoattack", eps=0.05, version=version, steps=2, n_queries=10)
    res = aa.run(model, x, y)
    names = [p["attack"] for p in res.per_attack]
    assert names == [a for a, _ in aa.attacks] and not res.skipped
    assert make_threat("linf", 0.05).distance(res.x_adv, x).max() <= 0.05 + 1e-6
    with torch.no_grad():
        robust = model.eval()(res.x_adv).argmax(1) == y
    assert torch.equal(robust, res.robust_correct)


def test_pgd_restarts_only_attack_survivors_and_start_at_random(setup) -> None:
    model, x, y = setup
    calls: list[int] = []
    hook = model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    one = create_attack("pgd", eps=0.05, steps=3, random_start=False)(model, x, y)
    n_one = len(calls)
    calls.clear()
    three = create_attack("pgd", eps=0.05, steps=3, restarts=3, random_start=False)(model, x, y)
    hook.remove()
    assert len(calls) > n_one  # later restarts ran (from random starts, not repeats of the first)
    with torch.no_grad():
        model.eval()
        assert int((model(three).argmax(1) != y).sum()) >= int((model(one).argmax(1) != y).sum())
