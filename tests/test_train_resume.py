"""A run killed with SIGKILL mid-epoch and resumed ends bit-identical to an uninterrupted run.

The run uses everything that carries state across steps: shuffling and augmentation (the
loader), dropout (the global RNG), PGD random starts (the objective's generator), momentum,
a warm-up + cosine schedule, EMA and mid-epoch checkpoints.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from robustlab.io import safe_torch_load

RECIPE = """
name: resume-test
seed: 7
data: {dataset: mnist-mini, n_train: 160, n_val: 40, batch_size: 20, eval_batch_size: 40,
       augment: {crop_padding: 2, hflip: true}}
model: {name: smallcnn}
objective: {name: pgd_at, eps: 0.1, steps: 2}
optim: {name: sgd, lr: 0.05, momentum: 0.9, nesterov: true, clip_grad_norm: 10}
schedule: {name: cosine, warmup_epochs: 0.5}
train: {epochs: 2, ema_decay: 0.9, log_every: 1, checkpoint_every: 3, progress: false}
validation: {every: 1, attack: {eps: 0.1, steps: 2}}
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    return env


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "robustlab", "train", *args]


def _records(run: Path) -> list[dict]:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for r in recs:
        r.pop("time_s", None)
        r.pop("images_per_s", None)
    return recs


def _assert_same_tensors(a: object, b: object, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), where
        for k in a:
            _assert_same_tensors(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where  # type: ignore[arg-type]
        for i, (x, y) in enumerate(zip(a, b, strict=True)):  # type: ignore[call-overload]
            _assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


@pytest.mark.timeout(240)
def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)
    ref, killed = tmp_path / "ref", tmp_path / "killed"

    proc = subprocess.Popen(
        _cmd(str(recipe), "--run-dir", str(killed)),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    last = killed / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 180
    while not last.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"training ended before its first checkpoint: {proc.stderr.read()}")
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "summary.json").exists()
    ck = safe_torch_load(last)
    assert ck["batch"] > 0, "the kill should land mid-epoch"
    assert ck["step"] < 16

    resumed = subprocess.run(
        _cmd("--resume", "--run-dir", str(killed)),
        env=_env(),
        check=True,
        capture_output=True,
        text=True,
    )
    # the resumed run says where it continues (epochs counted from 1, as in the progress bar)
    assert f"in epoch {int(ck['epoch']) + 1}/" in resumed.stdout
    assert f"at step {int(ck['step'])} (batch {int(ck['batch'])})" in resumed.stdout
    subprocess.run(
        _cmd(str(recipe), "--run-dir", str(ref)), env=_env(), check=True, capture_output=True
    )

    a = safe_torch_load(ref / "checkpoints" / "last.pt")
    b = safe_torch_load(last)
    assert a["step"] == b["step"] == 16
    for key in ("model", "ema", "optimizer", "scheduler", "ranks", "best"):
        _assert_same_tensors(a[key], b[key], key)
    _assert_same_tensors(
        safe_torch_load(ref / "checkpoints" / "best.pt"),
        safe_torch_load(killed / "checkpoints" / "best.pt"),
        "best.pt",
    )
    assert _records(ref) == _records(killed)
    assert json.loads((killed / "summary.json").read_text())["complete"]
