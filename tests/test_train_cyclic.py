"""The ``cyclic`` schedule and cycled SGD momentum (``schedule.base_momentum``): the same
learning rate and momentum as PyTorch's ``CyclicLR`` at every step, an exact resume from a
``weights_only`` checkpoint, a training run, and clear errors for settings that cannot work."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch

from robustlab.config import ScheduleConfig, config_from_dict, load_config
from robustlab.errors import ConfigError
from robustlab.io import safe_torch_load
from robustlab.train import train
from robustlab.train.optim import build_scheduler


def _sgd(lr: float = 0.2, momentum: float = 0.9) -> torch.optim.SGD:
    p = torch.nn.Parameter(torch.zeros(3))
    return torch.optim.SGD([p], lr=lr, momentum=momentum, weight_decay=5e-4)


def _trace(opt: torch.optim.Optimizer, sched: Any, steps: int) -> list[tuple[float, float]]:
    out = []
    for _ in range(steps):
        g = opt.param_groups[0]
        out.append((g["lr"], g["momentum"]))
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize(
    ("pct", "min_lr", "spe", "epochs"), [(0.5, 0.0, 10, 6), (0.3, 0.02, 7, 5), (0.4, 0.0, 13, 1)]
)
def test_cyclic_equals_torch_cyclic_lr(pct: float, min_lr: float, spe: int, epochs: int) -> None:
    total = spe * epochs
    ref_opt = _sgd()
    ref = torch.optim.lr_scheduler.CyclicLR(
        ref_opt, base_lr=min_lr, max_lr=0.2, step_size_up=pct * total,
        step_size_down=(1 - pct) * total, base_momentum=0.8, max_momentum=0.9,
    )  # fmt: skip
    opt = _sgd()
    cfg = ScheduleConfig(name="cyclic", pct_start=pct, min_lr=min_lr, base_momentum=0.8)
    ours = build_scheduler(opt, cfg, spe, epochs, 0.2, 0.9)
    want, got = _trace(ref_opt, ref, total), _trace(opt, ours, total)
    for i, ((lr_w, m_w), (lr_g, m_g)) in enumerate(zip(want, got, strict=True)):
        assert lr_g == pytest.approx(lr_w, abs=1e-12), f"lr at step {i}"
        assert m_g == pytest.approx(m_w, abs=1e-12), f"momentum at step {i}"
    assert 0.19 < max(lr for lr, _ in got) <= 0.2 and 0.8 <= min(m for _, m in got) < 0.81


def test_without_base_momentum_the_momentum_stays() -> None:
    opt = _sgd()
    sched = build_scheduler(opt, ScheduleConfig(name="cyclic", pct_start=0.5), 10, 2, 0.2, 0.9)
    assert {m for _, m in _trace(opt, sched, 20)} == {0.9}


def test_resume_from_a_weights_only_checkpoint_is_exact() -> None:
    cfg = ScheduleConfig(name="cyclic", pct_start=0.5, base_momentum=0.8)
    opt = _sgd()
    sched = build_scheduler(opt, cfg, 10, 4, 0.2, 0.9)
    full = _trace(opt, sched, 40)
    opt = _sgd()
    sched = build_scheduler(opt, cfg, 10, 4, 0.2, 0.9)
    first = _trace(opt, sched, 13)
    buf = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    opt2 = _sgd()
    sched2 = build_scheduler(opt2, cfg, 10, 4, 0.2, 0.9)
    opt2.load_state_dict(state["opt"])
    sched2.load_state_dict(state["sched"])
    assert first + _trace(opt2, sched2, 27) == full


def test_a_run_with_cyclic_lr_and_momentum(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        [
            "data.dataset=mnist-mini", "data.n_train=100", "data.n_val=50",
            "data.batch_size=25", "train.epochs=2", "train.progress=false",
            "validation.every=0", "optim.lr=0.05", "schedule.name=cyclic",
            "schedule.pct_start=0.5", "schedule.base_momentum=0.85",
        ],
    )  # fmt: skip
    run = train(cfg, run_dir=tmp_path / "run")
    ckpt = safe_torch_load(run / "checkpoints" / "last.pt")
    groups = ckpt["optimizer"]["param_groups"]
    # 8 steps, peak after 4: after the last step the lr is back at 0, the momentum at 0.9
    assert all(g["lr"] == pytest.approx(0.0, abs=1e-12) for g in groups)
    assert all(g["momentum"] == pytest.approx(0.9) for g in groups)


@pytest.mark.parametrize(
    ("schedule", "optim", "match"),
    [
        ({"name": "cosine", "base_momentum": 0.8}, {}, "needs schedule.name onecycle or cyclic"),
        ({"name": "cyclic", "base_momentum": 0.8}, {"name": "adam"}, "cycles SGD's momentum"),
        ({"name": "cyclic", "base_momentum": 0.95}, {}, r"must be <= optim.momentum \(0.9\)"),
        ({"name": "cyclic", "warmup_epochs": 1}, {}, "set warmup_epochs to 0"),
        ({"name": "cyclic", "base_momentum": 1.0}, {}, "base_momentum"),
    ],
)
def test_bad_settings_are_named(schedule: dict, optim: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        config_from_dict({"schedule": schedule, "optim": optim})


def test_onecycle_cycles_momentum_against_its_lr() -> None:
    """DyART's recipe: OneCycleLR's default momentum cycle (0.95 at the ends, 0.85 at the peak)."""
    opt = _sgd(lr=0.1, momentum=0.95)
    cfg = ScheduleConfig(name="onecycle", pct_start=0.25, base_momentum=0.85)
    trace = _trace(opt, build_scheduler(opt, cfg, 10, 4, 0.1, 0.95), 40)
    for lr, m in trace:  # momentum is linear in the lr: 0.95 - 0.1 * lr / 0.1
        assert m == pytest.approx(0.95 - lr, abs=1e-12)
    assert trace[9] == pytest.approx((0.1, 0.85)) and trace[-1][1] > 0.949
