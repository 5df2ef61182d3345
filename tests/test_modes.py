"""The one model-mode context manager, the shared uint8 -> float conversion, the run-directory
paths, and validation running the same PGD as ``robustlab eval --attack pgd``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from robustlab.attacks import PGD, attack_mode
from robustlab.config import ValidationConfig, config_from_dict
from robustlab.data import load_split
from robustlab.data.convert import to_float
from robustlab.errors import RobustlabError
from robustlab.modes import model_mode
from robustlab.objectives.base import inner_max
from robustlab.train.rundir import RunDir
from robustlab.train.validation import validate


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 3))
    net.train()
    net[2].eval()  # a frozen submodule inside a training model
    net[0].weight.requires_grad_(False)  # a frozen parameter
    return net


def _state(net: nn.Module) -> tuple[list[bool], list[bool], list[torch.Tensor]]:
    bn = net[1]
    return (
        [m.training for m in net.modules()],
        [p.requires_grad for p in net.parameters()],
        [bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()],
    )


@pytest.mark.parametrize("mode", ["eval", "train", "keep"])
def test_model_mode_restores_every_submodule_flag_and_statistic(mode: str) -> None:
    net = _net()
    before = _state(net)
    with model_mode(net, mode) as m:
        assert all(not p.requires_grad for p in m.parameters())
        if mode != "keep":
            assert all(x.training == (mode == "train") for x in m.modules())
        m(torch.randn(16, 4))  # a train-mode forward would move the BatchNorm statistics
    after = _state(net)
    assert after[0] == before[0] and after[1] == before[1]
    for a, b in zip(after[2], before[2], strict=True):
        assert torch.equal(a, b)


def test_bn_update_and_param_grads_are_opt_in() -> None:
    net = _net()
    mean0 = net[1].running_mean.clone()
    with model_mode(net, "train", param_grads=True, bn_stats="update") as m:
        assert m[3].weight.requires_grad and not m[0].weight.requires_grad
        m(torch.randn(16, 4) + 3.0)
    assert not torch.equal(net[1].running_mean, mean0)
    assert not net[2].training  # the frozen submodule is frozen again


def test_attack_mode_and_inner_max_are_model_mode() -> None:
    for ctx in (attack_mode, lambda n: inner_max(n, "eval"), lambda n: inner_max(n, "train")):
        net = _net()
        before = _state(net)
        with ctx(net):
            pass
        assert _state(net)[:2] == before[:2]
    with pytest.raises(RobustlabError, match="model mode"):
        with model_mode(_net(), "sleep"):  # type: ignore[arg-type]
            pass


def test_to_float_is_the_one_conversion() -> None:
    u = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    x = to_float(u)
    assert x.dtype == torch.float32 and float(x.max()) == 1.0 and float(x.min()) == 0.0
    assert torch.equal(x, u.float().div_(255.0))  # the formula every path used before
    with pytest.raises(RobustlabError, match=r"\[0, 1\]"):
        to_float(torch.full((1, 1, 2, 2), 2.0), check=True)
    with pytest.raises(RobustlabError, match="dtype"):
        to_float(torch.zeros(1, 1, 2, 2, dtype=torch.int32))


def test_rundir_owns_the_paths(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "r")
    assert run.config.name == "config.yaml" and run.metrics.name == "metrics.jsonl"
    assert run.checkpoint("best") == tmp_path / "r" / "checkpoints" / "best.pt"
    assert run.eval.summary == tmp_path / "r" / "eval" / "summary.json"
    assert run.analysis_arrays("logits").parent == run.analysis_dir
    assert run.snapshot(3) == tmp_path / "r" / "checkpoints" / "epochs" / "e0003.pt"
    assert run.relative(run.weights("best")) == "checkpoints/best.safetensors"
    assert RunDir(run) == run and str(run) == str(tmp_path / "r")
    assert not run.is_complete()
    with pytest.raises(RobustlabError, match="checkpoint"):
        run.checkpoint("worst")


def test_validation_runs_the_pgd_of_eval() -> None:
    """Training's robust validation and ``PGD`` (what ``eval --attack pgd`` builds) agree
    sample for sample: same implementation, same default step size, same seed."""
    from robustlab.models import create_model

    split = load_split("mnist-mini", "test")
    torch.manual_seed(0)
    model = create_model("lenet5", dataset="mnist").eval()
    cfg: ValidationConfig = config_from_dict(
        {"validation": {"n": 40, "attack": {"eps": 0.02, "steps": 3}}}
    ).validation
    out = validate(model, split, cfg, batch_size=40, device=torch.device("cpu"), seed=7)
    x, y = to_float(split.images[:40]), split.labels[:40]
    atk = PGD(eps=0.02, norm=cfg.attack.norm, steps=3, loss=cfg.attack.loss, seed=7)
    x_adv = atk(model, x, y)
    with torch.no_grad():
        robust = (model(x).argmax(1) == y) & (model(x_adv).argmax(1) == y)
    # eps 0.02 on this untrained net breaks some but not all of its correct points, so the
    # equality below compares which points survive, not two zeros
    assert 0.0 < out["val_robust_acc"] < out["val_clean_acc"]
    assert round(out["val_robust_acc"] * 40) == int(robust.sum())  # counts, not float means
    assert out["val_n"] == 40
