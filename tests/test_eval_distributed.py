"""Distributed evaluation: ``torchrun --nproc-per-node 2 -m robustlab eval`` (gloo, CPU) writes
the summary and per-sample records of one process with the same seed, and only rank 0 prints.
Both command lines of the docs are exercised: ``--num-images`` and ``-- eval ... --n``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def _summary(run_dir: Path) -> dict:
    s = json.loads((run_dir / "summary.json").read_text())
    s.pop("run_dir")
    s.pop("seconds")
    for p in s["per_attack"]:
        p.pop("seconds")  # wall-clock time is the one field that may differ
    return s


@pytest.mark.timeout(300)
def test_two_gloo_processes_write_the_single_process_summary(
    tmp_path: Path, shared_data: Path, trades_checkpoint: Path
) -> None:
    # 24 images in batches of 4: six chunks per stage, so both ranks attack (and APGD-T, FAB-T
    # and Square each see survivors gathered from both ranks); cut-down steps keep it fast.
    common = [
        "--model", "smallcnn", "--weights", str(trades_checkpoint), "--dataset", "mnist",
        "--data-dir", str(shared_data), "--attack", "autoattack", "--eps", "0.35",
        "--steps", "4", "--n-queries", "40", "--batch-size", "4", "--seed", "3",
        "--no-sanity", "--device", "cpu", "--quiet",
    ]  # fmt: skip
    run = dict(env=_env(), capture_output=True, text=True, timeout=240)
    single, ddp, ddp2 = tmp_path / "single", tmp_path / "ddp", tmp_path / "ddp2"
    r = subprocess.run(
        [sys.executable, "-m", "robustlab", "eval", *common, "--n", "24", "--run-dir", str(single)],
        **run,
    )
    assert r.returncode == 0, r.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
    r = subprocess.run(
        [*torchrun, "2", "-m", "robustlab", "eval", *common, "--num-images", "24",
         "--run-dir", str(ddp)],
        **run,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("robust accuracy") == 1  # rank 0 alone prints
    s1, s2 = _summary(single), _summary(ddp)
    assert s1["robust_correct"] < s1["clean_correct"]  # the attack broke points: not vacuous
    assert s1 == s2
    assert (single / "samples.jsonl").read_text() == (ddp / "samples.jsonl").read_text()
    # the documented alternative: "--" ends torchrun's options, so --n reaches robustlab
    r = subprocess.run(
        [*torchrun, "2", "-m", "robustlab", "--", "eval", *common, "--n", "24",
         "--run-dir", str(ddp2)],
        **run,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert _summary(ddp2) == s1
