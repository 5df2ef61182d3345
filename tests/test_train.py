"""The training loop's parts: schedules, weight-decay groups, EMA, RNG states, run directory,
a short run end to end, callbacks, bad input, and the ``robustlab train`` command."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from robustlab.cli import main as cli_main
from robustlab.config import ScheduleConfig, config_from_dict, load_config
from robustlab.errors import ConfigError, RobustlabError
from robustlab.io import atomic_torch_save, safe_torch_load
from robustlab.train import build_model, load_run_model, register_callback, train
from robustlab.train.checkpoint import rng_state, set_rng_state
from robustlab.train.ema import ModelEMA
from robustlab.train.optim import build_optimizer, lr_factor, param_groups
from robustlab.train.rundir import RunDirError, prepare_run_dir

TINY = [
    "data.dataset=mnist-mini",
    "data.n_train=200",
    "data.n_val=100",
    "data.batch_size=50",
    "data.eval_batch_size=100",
    "train.epochs=2",
    "train.progress=false",
    "train.log_every=2",
    "optim.lr=0.05",
    "validation.attack.steps=2",
    "validation.attack.eps=0.1",
]


def tiny(*extra: str) -> Any:
    return load_config(None, TINY + list(extra))


# ----------------------------------------------------------------------------- schedules


def _sched(**kw: Any) -> ScheduleConfig:
    return config_from_dict({"schedule": kw}).schedule


def test_schedules_follow_their_formulas() -> None:
    spe, total = 10, 100
    cos = _sched(name="cosine")
    assert lr_factor(0, total, spe, cos) == 1.0
    assert lr_factor(50, total, spe, cos) == pytest.approx(0.5)
    assert lr_factor(100, total, spe, cos) == pytest.approx(0.0)
    assert lr_factor(100, total, spe, cos, min_factor=0.1) == pytest.approx(0.1)
    ms = _sched(name="multistep", milestones=[5, 7.5], gamma=0.1)
    assert [lr_factor(s, total, spe, ms) for s in (49, 50, 74, 75)] == pytest.approx(
        [1.0, 0.1, 0.1, 0.01]
    )
    warm = _sched(name="constant", warmup_epochs=2)
    assert [lr_factor(s, total, spe, warm) for s in (0, 9, 19, 20, 99)] == pytest.approx(
        [0.05, 0.5, 1.0, 1.0, 1.0]
    )
    one = _sched(name="onecycle", pct_start=0.25)
    vals = [lr_factor(s, total, spe, one) for s in range(total)]
    peak = int(np.argmax(vals))
    assert peak == 24 and vals[peak] == 1.0
    assert all(a <= b for a, b in zip(vals[:peak], vals[1 : peak + 1], strict=True))
    assert all(a >= b for a, b in zip(vals[peak:-1], vals[peak + 1 :], strict=True))
    assert vals[-1] < 0.01
    wc = _sched(name="cosine", warmup_epochs=1)
    assert lr_factor(10, total, spe, wc) == 1.0
    assert lr_factor(55, total, spe, wc) == pytest.approx(0.5)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.gn = nn.GroupNorm(2, 4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.gn(self.bn(self.conv(x))).mean((2, 3)))


def test_weight_decay_excludes_norm_and_bias() -> None:
    net = _Net()
    decay, plain = param_groups(net, 5e-4, exclude_norm_bias=True)
    assert {id(p) for p in decay["params"]} == {id(net.conv.weight), id(net.fc.weight)}
    assert decay["weight_decay"] == 5e-4 and plain["weight_decay"] == 0.0
    assert len(plain["params"]) == 6
    (only,) = param_groups(net, 5e-4, exclude_norm_bias=False)
    assert len(only["params"]) == 8
    cfg = load_config(None, ["optim.name=sgd", "optim.nesterov=true"], check=False)
    opt = build_optimizer(net, cfg.optim, torch.device("cpu"))
    assert opt.param_groups[0]["nesterov"] and opt.param_groups[1]["weight_decay"] == 0.0
    for name in ("adam", "adamw"):
        cfg = load_config(None, [f"optim.name={name}", "optim.lr=1e-3"], check=False)
        opt = build_optimizer(net, cfg.optim, torch.device("cpu"))
        assert type(opt).__name__.lower() == name


def test_ema_matches_the_recurrence() -> None:
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    ema = ModelEMA(net, decay=0.9, warmup=False)
    ref = [p.detach().clone() for p in net.parameters()]
    for _ in range(5):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        ema.update(net)
        ref = [0.9 * r + 0.1 * p.detach() for r, p in zip(ref, net.parameters(), strict=True)]
    for r, e in zip(ref, ema.module.parameters(), strict=True):
        torch.testing.assert_close(e, r)
    warm = ModelEMA(net, decay=0.999, warmup=True)
    assert warm.current_decay() == pytest.approx(0.1)


def test_rng_state_survives_a_weights_only_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    atomic_torch_save({"rng": rng_state()}, tmp_path / "s.pt")
    a = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(safe_torch_load(tmp_path / "s.pt")["rng"])
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


# ----------------------------------------------------------------------------- run directory


def test_run_dir_unwritable_or_taken(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunDirError, match="cannot write"):
        prepare_run_dir(blocker / "run")
    with pytest.raises(RunDirError, match="not a directory"):
        prepare_run_dir(blocker)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "config.yaml").write_text("name: x\n")
    with pytest.raises(RunDirError, match="--resume"):
        prepare_run_dir(taken)
    path, created = prepare_run_dir(tmp_path / "new" / "run")
    assert created and path.is_dir() and not any(path.iterdir())


def test_unwritable_run_dir_fails_before_training(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RobustlabError, match="cannot write to run directory"):
        train(tiny(), run_dir=blocker / "run")
    assert not (blocker / "run").exists()


def test_teacher_with_other_class_count_is_an_error(tmp_path: Path) -> None:
    from robustlab.models import create_model

    teacher = create_model("lenet5", dataset="mnist", num_classes=7)
    path = tmp_path / "teacher.pt"
    atomic_torch_save(teacher.state_dict(), path)
    cfg = tiny(
        "objective.name=distill",
        f"objective.teacher={path}",
        "objective.teacher_model=lenet5",
        "objective.teacher_kwargs={num_classes: 7}",
    )
    run = tmp_path / "run"
    with pytest.raises(RobustlabError, match=r"(?i)class"):
        train(cfg, run_dir=run)
    assert not (run / "summary.json").exists()
    assert not (run / "checkpoints").exists()


# ----------------------------------------------------------------------------- end to end

_SEEN: list[dict[str, Any]] = []


@register_callback("test_probe")
class _Probe:
    def __init__(self, tag: str = "") -> None:
        self.tag = tag

    def on_epoch_end(self, ctx: Any) -> None:
        assert not ctx.model.training
        assert (ctx.run_dir / "config.yaml").is_file()
        _SEEN.append({"epoch": ctx.epoch, "tag": self.tag, "n_train": len(ctx.data.train)})
        ctx.log({"probe": float(ctx.epoch)})


def test_short_run_writes_a_complete_run_dir(tmp_path: Path) -> None:
    _SEEN.clear()
    extra = [
        "objective.name=pgd_at",
        "objective.eps=0.1",
        "objective.steps=2",
        "train.ema_decay=0.9",
        "optim.clip_grad_norm=5",
        "schedule.warmup_epochs=0.5",
        "callbacks=[{name: test_probe, tag: hi}]",
    ]
    cfg = tiny(*extra)
    run = train(cfg, run_dir=tmp_path / "run")
    files = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}
    assert files == {
        "config.yaml",
        "metrics.jsonl",
        "summary.json",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "checkpoints/best.safetensors",
        "checkpoints/ema.safetensors",
    }
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in recs if r["kind"] == "step"]
    epochs = [r for r in recs if r["kind"] == "epoch"]
    assert [r["step"] for r in steps] == [2, 4, 6, 8]
    assert [r["epoch"] for r in epochs] == [0, 1] and [r["probe"] for r in epochs] == [0.0, 1.0]
    for r in epochs:
        assert 0 <= r["val_robust_acc"] <= r["val_clean_acc"] <= 1 and r["val_n"] == 100
        assert math.isfinite(r["train_loss"]) and "train_adv_acc" in r
    assert _SEEN == [
        {"epoch": 0, "tag": "hi", "n_train": 200},
        {"epoch": 1, "tag": "hi", "n_train": 200},
    ]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["complete"] and summary["steps"] == 8
    assert summary["best"]["metric"] == "val_robust_acc"
    best_epoch = max(epochs, key=lambda r: (r["val_robust_acc"], -r["epoch"]))["epoch"]
    assert summary["best"]["epoch"] == best_epoch
    assert safe_torch_load(run / "checkpoints" / "best.pt")["epoch"] == best_epoch
    stored = load_config(run / "config.yaml")
    assert stored == cfg
    ck = safe_torch_load(run / "checkpoints" / "last.pt")
    assert ck["step"] == 8 and ck["epoch"] == 2 and ck["batch"] == 0
    ema_model, _ = load_run_model(run, "ema")
    last_model, _ = load_run_model(run, "last")
    best_model, _ = load_run_model(run, "best")
    for k, v in ck["ema"]["model"].items():
        assert torch.equal(ema_model.state_dict()[k], v)
    assert not torch.equal(ema_model.conv1.weight, last_model.conv1.weight)
    assert not best_model.training
    with pytest.raises(RobustlabError, match="--resume"):
        train(cfg, run_dir=run)
    assert train(cfg, run_dir=run, resume=True) == run  # complete: returned as is
    with pytest.raises(ConfigError, match="optim.lr"):
        train(tiny(*extra, "optim.lr=0.5"), run_dir=run, resume=True)


def test_standard_training_learns_and_without_validation_best_is_final(tmp_path: Path) -> None:
    cfg = tiny("data.n_val=0", "train.epochs=3", "optim.lr=0.1", "data.n_train=500")
    run = train(cfg, run_dir=tmp_path / "run")
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in recs if r["kind"] == "epoch"]
    assert epochs[-1]["train_loss"] < 0.6 * epochs[0]["train_loss"]
    assert epochs[-1]["train_acc"] > 0.7
    best, _ = load_run_model(run, "best")
    last, _ = load_run_model(run, "last")
    for a, b in zip(best.state_dict().values(), last.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_unknown_callback_is_an_error_before_any_io(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown callback 'nope'"):
        train(tiny("callbacks=[nope]"), run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = [
        ["train", "objective.name=nope"],
        ["train", "objective.name=pgd_at", "objective.eps=-0.3"],
        ["train", "objective.name=trades", "objective.beta=-6"],
        ["train", "train.epochz=1"],
        ["train", "--run-dir", str(tmp_path / "f" / "run")] + TINY,
        ["train", "--resume"],
        ["train", str(tmp_path / "missing.yaml")],
    ]
    (tmp_path / "f").write_text("a file, not a folder")
    for argv in bad:
        assert cli_main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("robustlab: error:") and "\n" not in err, err
    assert not (tmp_path / "f" / "run").exists()


def test_cli_trains_a_recipe(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: t\ndata: {dataset: mnist-mini, n_train: 100, batch_size: 50}\n")
    run = tmp_path / "run"
    argv = ["train", str(recipe), "--run-dir", str(run), "train.epochs=1", "train.progress=false"]
    assert cli_main(argv) == 0
    assert (run / "summary.json").is_file()


def test_fine_tune_from_weights(tmp_path: Path, trades_checkpoint: Path) -> None:
    cfg = tiny(
        "model.name=smallcnn",
        f"model.weights={trades_checkpoint}",
        "optim.lr=1e-9",
        "optim.weight_decay=0",
        "train.epochs=1",
        "validation.attack.eps=0.3",
        "validation.attack.steps=10",
    )
    run = train(cfg, run_dir=tmp_path / "ft")
    model, _ = load_run_model(run, "last")
    ref = safe_torch_load(trades_checkpoint)
    for k, v in ref.items():
        torch.testing.assert_close(model.state_dict()[k], v, atol=1e-6, rtol=0)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final"]["val_clean_acc"] > 0.95  # the TRADES model, barely moved
    again = train(
        tiny("model.name=smallcnn", f"model.weights={run}", "train.epochs=1", "optim.lr=1e-9"),
        run_dir=tmp_path / "ft2",
    )
    m2, _ = load_run_model(again, "last")
    torch.testing.assert_close(m2.state_dict(), model.state_dict(), atol=1e-6, rtol=0)
    with pytest.raises(ConfigError, match="model.weights"):
        train(tiny(f"model.weights={tmp_path / 'missing.pt'}"), run_dir=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_bf16_autocast_and_adamw_on_cpu(tmp_path: Path) -> None:
    cfg = tiny(
        "train.amp=bf16",
        "optim.name=adamw",
        "optim.lr=2e-3",
        "schedule.name=onecycle",
        "train.epochs=1",
        "objective.name=pgd_at",
        "objective.eps=0.1",
        "objective.steps=1",
        "validation.n=50",
    )
    run = train(cfg, run_dir=tmp_path / "run")
    final = json.loads((run / "summary.json").read_text())["final"]
    assert math.isfinite(final["train_loss"]) and 0 <= final["val_robust_acc"] <= 1
    model, _ = load_run_model(run, "last")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    torch.manual_seed(cfg.seed)
    init = build_model(cfg)
    assert not torch.equal(init.conv1.weight, model.conv1.weight)


@pytest.mark.slow
def test_torch_compile_trains_like_eager(tmp_path: Path) -> None:
    runs = {}
    for compiled in (False, True):
        cfg = tiny(f"train.compile={str(compiled).lower()}", "train.epochs=1", "data.n_val=0")
        runs[compiled] = load_run_model(train(cfg, run_dir=tmp_path / str(compiled)), "last")[0]
    for a, b in zip(runs[False].parameters(), runs[True].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
