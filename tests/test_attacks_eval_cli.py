"""``robustlab eval --attack``: robust accuracy, per-attack breakdown, per-sample records, eps
sweeps, saved adversarial images, sanity checks, and one-line errors for bad options."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from robustlab.cli import main
from robustlab.io import safe_torch_load


def _base(trades: Path, data: Path) -> list[str]:
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
        "--quiet",
    ]


def _json(capsys: pytest.CaptureFixture) -> dict:
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    return json.loads(out[0])


def test_pgd_json_records_and_saved_adv(
    trades_checkpoint: Path, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run_dir, adv_file = tmp_path / "ev", tmp_path / "adv.pt"
    args = [*_base(trades_checkpoint, shared_data), "--n", "40", "--attack", "pgd"]
    args += ["--eps", "3/10", "--steps", "10", "--step-size", "0.05", "--loss", "margin"]
    args += ["--no-random-start", "--run-dir", str(run_dir), "--save-adv", str(adv_file)]
    assert main([*args, "--json"]) == 0
    s = _json(capsys)
    assert s["attack"] == "pgd" and s["n"] == 40 and s["eps"] == pytest.approx(0.3)
    assert s["norm"] == "linf" and s["attack_options"]["loss"] == "margin"
    assert s["attack_options"]["random_start"] is False
    assert 0.9 <= s["clean_accuracy"] <= 1.0 and s["robust_accuracy"] <= s["clean_accuracy"]
    assert s["per_attack"][0]["attack"] == "pgd"
    assert (
        json.loads((run_dir / "summary.json").read_text())["robust_accuracy"]
        == s["robust_accuracy"]
    )
    recs = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert len(recs) == 40
    assert sum(r["robust_correct"] for r in recs) == round(40 * s["robust_accuracy"])
    for r in recs:
        broken = r["clean_correct"] and not r["robust_correct"]
        assert (r["broken_by"] == "pgd") == broken
        assert (r["perturbation_norm"] is not None) == broken
        if broken:
            assert 0 < r["perturbation_norm"] <= 0.3 + 1e-6
    saved = safe_torch_load(adv_file)
    assert saved["x_adv"].shape == (40, 1, 28, 28)
    assert torch.equal(saved["robust_correct"], torch.tensor([r["robust_correct"] for r in recs]))


def test_autoattack_text_output_breakdown_and_sanity(
    trades_checkpoint: Path, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = [*_base(trades_checkpoint, shared_data), "--n", "8", "--attack", "autoattack"]
    args += ["--eps", "0.3", "--steps", "5", "--n-queries", "20", "--run-dir", str(tmp_path / "aa")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "clean accuracy" in out and "robust accuracy" in out
    for name in ("apgd-ce", "apgd-t", "fab-t", "square"):
        assert f"after {name}" in out
    assert "sanity checks" in out or "WARNING" in out  # run by default after AutoAttack
    s = json.loads((tmp_path / "aa" / "summary.json").read_text())
    assert {c["name"] for c in s["sanity_checks"]} >= {"probability-outputs", "large-eps"}
    assert s["warnings"] == [c["name"] for c in s["sanity_checks"] if not c["passed"]]


def test_eps_sweep_is_monotone(
    trades_checkpoint: Path, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = [*_base(trades_checkpoint, shared_data), "--n", "32", "--attack", "pgd"]
    args += ["--steps", "5", "--eps-sweep", "0.1,0.3,0.45", "--run-dir", str(tmp_path / "sw")]
    assert main([*args, "--json"]) == 0
    s = _json(capsys)
    accs = [e["robust_accuracy"] for e in s["eps_sweep"]]
    assert [e["eps"] for e in s["eps_sweep"]] == pytest.approx([0.1, 0.3, 0.45])
    assert accs == sorted(accs, reverse=True) and accs[0] > accs[-1]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--attack", "pgd", "--eps", "-1"], "eps must be positive"),
        (["--attack", "nope", "--eps", "0.3"], "unknown attack 'nope'"),
        (["--attack", "pgd"], "needs --eps"),
        (["--attack", "pgd", "--eps", "0.3", "--norm", "l7"], "unknown norm"),
        (["--attack", "pgd", "--eps", "0.3", "--norm", "gn"], "--norm-layer gn"),
        (["--attack", "apgd-t", "--eps", "0.3", "--loss", "ce"], "targeted DLR"),
        (["--attack", "fgsm", "--eps", "0.3", "--steps", "3"], "one step"),
        (["--eps", "0.3"], "need --attack"),
        (["--attack", "pgd", "--eps", "0.3", "--n-targets", "3"], "does not take --n-targets"),
        (["--attack", "pgd", "--eps", "0.3", "--version", "plus"], "--version"),
        (["--attack", "fgsm", "--eps", "0.3", "--precision", "bf16"], "not take --precision"),
        (["--attack", "apgd-ce", "--eps", "0.3", "--precision", "fp16"], "float32, bf16 or auto"),
    ],
)
def test_bad_options_exit_2_with_one_line(
    trades_checkpoint: Path, shared_data: Path, capsys: pytest.CaptureFixture, extra, message
) -> None:
    rc = main([*_base(trades_checkpoint, shared_data), "--n", "4", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("robustlab: error:") and message in err[0], err


def test_bad_attack_subprocess_has_no_traceback(trades_checkpoint: Path, shared_data: Path) -> None:
    cmd = [sys.executable, "-m", "robustlab", *_base(trades_checkpoint, shared_data)]
    proc = subprocess.run(
        [*cmd, "--attack", "nope", "--eps", "0.3"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip().splitlines() == [proc.stderr.strip().splitlines()[0]]
        and "unknown attack" in proc.stderr
    )
    assert "Traceback" not in proc.stderr


def test_eval_of_a_training_run(
    trades_checkpoint: Path, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import yaml

    from robustlab.io import atomic_torch_save, atomic_write_text

    run = tmp_path / "run"
    cfg = {"model": {"name": "smallcnn"}, "data": {"dataset": "mnist"}}
    atomic_write_text(run / "config.yaml", yaml.safe_dump(cfg))
    atomic_torch_save(
        {"model": safe_torch_load(trades_checkpoint)}, run / "checkpoints" / "best.pt"
    )
    args = ["eval", "--run", str(run), "--data-dir", str(shared_data), "--quiet", "--n", "16"]
    assert main([*args, "--attack", "fgsm", "--eps", "0.3", "--json"]) == 0
    s = _json(capsys)
    assert s["run"] == str(run) and s["dataset"] == "mnist" and s["n"] == 16
    assert s["clean_accuracy"] == 1.0 and s["robust_accuracy"] <= 1.0
    ev = run / "eval" / "fgsm-linf-eps0.3-n16-seed0"  # each evaluation in its own folder
    assert json.loads((ev / "summary.json").read_text())["attack"] == "fgsm"
    assert len((ev / "samples.jsonl").read_text().splitlines()) == 16
    # the clean-only path works with --run too; --run and --model together do not
    assert main(args) == 0 and "clean accuracy" in capsys.readouterr().out
    assert main([*args, "--model", "smallcnn"]) == 2


def test_precision_option_reaches_the_attack_and_the_summary(
    trades_checkpoint: Path, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = [*_base(trades_checkpoint, shared_data), "--n", "12", "--attack", "apgd-ce"]
    args += ["--eps", "0.3", "--steps", "5", "--precision", "bf16", "--no-sanity"]
    assert main([*args, "--run-dir", str(tmp_path / "ev"), "--json"]) == 0
    s = _json(capsys)
    assert s["attack_options"]["precision"] == "bf16"
    assert s["robust_accuracy"] <= s["clean_accuracy"]
