"""``robustlab eval`` (clean accuracy) end to end, and its one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from robustlab.cli import main
from robustlab.io import atomic_torch_save
from robustlab.models import create_model


def _args(trades: Path, data: Path, *extra: str) -> list[str]:
    return [
        "eval",
        "--model",
        "smallcnn",
        "--weights",
        str(trades),
        "--dataset",
        "mnist",
        "--data-dir",
        str(data),
        *extra,
    ]


def test_eval_json_subprocess(trades_checkpoint: Path, shared_data: Path) -> None:
    cmd = [sys.executable, "-m", "robustlab", *_args(trades_checkpoint, shared_data)]
    proc = subprocess.run(
        [*cmd, "--n", "500", "--json"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1  # exactly one JSON object on stdout
    result = json.loads(lines[0])
    assert result["model"] == "smallcnn" and result["dataset"] == "mnist"
    assert result["n"] == 500
    assert 0.0 <= result["clean_accuracy"] <= 1.0
    assert result["clean_accuracy"] == result["correct"] / 500
    assert result["clean_accuracy"] >= 0.98  # 99.48% on the full set
    assert "Traceback" not in proc.stderr


def test_eval_text_output_and_out_file(
    trades_checkpoint: Path, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "eval" / "summary.json"
    rc = main(_args(trades_checkpoint, shared_data, "--n", "1000", "--quiet", "--out", str(out)))
    assert rc == 0
    stdout = capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["n"] == 1000 and f"({saved['correct']}/1000)" in stdout
    assert "clean accuracy" in stdout


def test_eval_remap_auto(
    trades_checkpoint: Path, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import torch

    sd = torch.load(trades_checkpoint, map_location="cpu", weights_only=True)
    renamed = tmp_path / "renamed.pt"
    atomic_torch_save({k.replace("classifier", "head"): v for k, v in sd.items()}, renamed)
    base = _args(renamed, shared_data, "--n", "200", "--json", "--quiet")
    assert main(base) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--remap auto" in err[0]
    assert main([*base, "--remap", "auto"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["remapped"]["head.fc1.weight"] == "classifier.fc1.weight"
    assert result["clean_accuracy"] >= 0.98


def _one_line_error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("robustlab: error: ")
    assert "Traceback" not in captured.err and captured.out == ""
    return lines[0]


def test_eval_bad_input(
    trades_checkpoint: Path, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = _args(trades_checkpoint, shared_data, "--json")
    unknown = [*args]
    unknown[unknown.index("smallcnn")] = "resnet9000"
    assert "unknown model 'resnet9000'" in _one_line_error(capsys, unknown)

    msg = _one_line_error(capsys, [*args, "--n", "10001"])
    assert "--n 10001" in msg and "10000" in msg

    other = tmp_path / "lenet.pt"
    atomic_torch_save(create_model("lenet5").state_dict(), other)
    msg = _one_line_error(capsys, _args(other, shared_data, "--json"))
    assert "another architecture" in msg and "missing keys" in msg

    msg = _one_line_error(capsys, _args(tmp_path / "absent.pt", shared_data))
    assert "not found" in msg

    assert "does not exist" in _one_line_error(
        capsys, _args(trades_checkpoint, tmp_path / "absent", "--n", "10")
    )
    (tmp_path / "empty").mkdir()
    msg = _one_line_error(capsys, _args(trades_checkpoint, tmp_path / "empty", "--n", "10"))
    assert "mnist" in msg

    unknown_data = [*args]
    unknown_data[unknown_data.index("mnist")] = "imagenet-22k"
    assert "imagenet-22k" in _one_line_error(capsys, unknown_data)
