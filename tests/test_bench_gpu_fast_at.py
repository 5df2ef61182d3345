"""The GPU benchmark's Fast-AT is the paper recipe's (``recipes/paper/fast_at.yaml``): the
objective, model, optimizer and schedule come from the functions ``robustlab train`` uses, so
the benchmark cannot drift from the authors' settings the recipe documents."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_gpu  # noqa: E402


def test_fast_at_follows_the_paper_recipe() -> None:
    cfg = bench_gpu.load_config(bench_gpu.RECIPE, [])
    assert cfg.data.batch_size == 128 and cfg.train.epochs == 15  # the authors' batch, epochs
    _, obj, opt, sched, settings = bench_gpu.fast_at_setup(cfg, torch.device("cpu"), 10, 2)
    assert obj.name == "fast_at" and obj.attack_mode == "train"  # the authors' train-mode FGSM
    assert obj.eps == pytest.approx(8 / 255) and obj.step_size == pytest.approx(10 / 255)
    assert settings["recipe"] == "recipes/paper/fast_at.yaml"
    norm = settings["input_norm"]  # the authors' CIFAR-10 mean/std, inside the model
    assert norm["applied"] and norm["mean"] == pytest.approx([0.4914, 0.4822, 0.4465])
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == 5e-4
    lrs, moms = [], []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        moms.append(opt.param_groups[0]["momentum"])
        opt.step()
        sched.step()
    # CyclicLR: 0 -> 0.2 at half of training -> back; momentum 0.9 -> 0.8 -> back
    assert lrs[0] == 0.0 and lrs[10] == pytest.approx(0.2) and lrs[19] == pytest.approx(0.02)
    assert moms[0] == pytest.approx(0.9) and moms[10] == pytest.approx(0.8)
