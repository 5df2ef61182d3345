"""DistributedDataParallel: ``torchrun --nproc-per-node 2`` (gloo, CPU) matches one process with
the same global batch, and only rank 0 writes the run directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from robustlab.io import safe_torch_load

# LeNet-5 without BatchNorm or dropout, no augmentation: the two runs see the same global
# batches (rank r takes every 2nd element of the same permutation) and DDP averages gradients.
RECIPE = """
name: ddp-test
seed: 3
data: {dataset: mnist-mini, n_train: 240, n_val: 40, batch_size: 40, eval_batch_size: 20}
model: {name: lenet5}
objective: {name: standard}
optim: {name: sgd, lr: 0.05, momentum: 0.9, weight_decay: 0.0005, clip_grad_norm: 5}
schedule: {name: cosine, warmup_epochs: 0.5}
train: {epochs: 2, ema_decay: 0.8, log_every: 2, progress: false, device: cpu}
validation: {every: 1, attack: {eps: 0.1, steps: 2}}
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


@pytest.mark.timeout(300)
def test_two_gloo_processes_match_one_process(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    train = ["-m", "robustlab", "train", str(recipe)]
    run = dict(env=_env(), capture_output=True, text=True, timeout=240)
    r = subprocess.run([sys.executable, *train, "--run-dir", str(single)], **run)
    assert r.returncode == 0, r.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    r = subprocess.run([*torchrun, "--nproc-per-node", "2", *train, "--run-dir", str(ddp)], **run)
    assert r.returncode == 0, r.stderr[-3000:]

    files = {p.relative_to(ddp).as_posix() for p in ddp.rglob("*") if p.is_file()}
    assert files == {
        "config.yaml",
        "metrics.jsonl",
        "summary.json",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "checkpoints/best.safetensors",
        "checkpoints/ema.safetensors",
    }
    s1 = json.loads((single / "summary.json").read_text())
    s2 = json.loads((ddp / "summary.json").read_text())
    assert (s1["world_size"], s2["world_size"]) == (1, 2)
    assert s1["steps"] == s2["steps"] == 12

    a = safe_torch_load(single / "checkpoints" / "last.pt")
    b = safe_torch_load(ddp / "checkpoints" / "last.pt")
    assert len(b["ranks"]) == 2
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, rtol=1e-4, atol=1e-5, msg=k)
    for k, v in a["ema"]["model"].items():
        torch.testing.assert_close(b["ema"]["model"][k], v, rtol=1e-4, atol=1e-5, msg=k)
    init = _initial_weights(RECIPE)
    moved = max(float((a["model"][k] - init[k]).abs().max()) for k in init)
    assert moved > 1e-2  # training really changed the weights

    def epochs(run: Path) -> list[dict]:
        recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return [x for x in recs if x["kind"] == "epoch"]

    for e1, e2 in zip(epochs(single), epochs(ddp), strict=True):
        assert e1["train_loss"] == pytest.approx(e2["train_loss"], rel=1e-4)
        assert e1["val_n"] == e2["val_n"] == 40
        assert e1["val_clean_acc"] == pytest.approx(e2["val_clean_acc"])


def _initial_weights(recipe: str) -> dict[str, torch.Tensor]:
    import yaml

    from robustlab.config import config_from_dict
    from robustlab.train import build_model

    cfg = config_from_dict(yaml.safe_load(recipe))
    torch.manual_seed(cfg.seed)
    return build_model(cfg).state_dict()
