"""The command line never loses work or misleads (issue 11): each bad input is refused with exit
status 2 and one line naming the problem and the flag, before the expensive part, leaving no
file behind; evaluations of a run are kept side by side; runs end with a readable summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import robustlab.evaluate
from robustlab.cli import main
from robustlab.config import load_config
from robustlab.models import create_model

MINI = ["--dataset", "mnist-mini"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("w") / "lenet5.pt"
    torch.save(create_model("lenet5", dataset="mnist-mini", seed=0).state_dict(), path)
    return path


def _fake_run(root: Path, weights: Path, last: bool = True) -> Path:
    """A run directory as training leaves it (config, best.pt and last.pt), without training."""
    cfg = load_config(None, ["data.dataset=mnist-mini", "model.name=lenet5", "train.epochs=1"])
    (root / "checkpoints").mkdir(parents=True)
    (root / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    sd = torch.load(weights, weights_only=True)
    torch.save({"model": sd}, root / "checkpoints" / "best.pt")
    if last:
        torch.save({"model": sd, "step": 1, "epoch": 1}, root / "checkpoints" / "last.pt")
    return root


def _one_line_error(capsys: pytest.CaptureFixture, argv: list[str], *needles: str) -> str:
    rc = main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    err = [e for e in lines if not e.startswith("robustlab: warning:")]  # e.g. normalization
    assert rc == 2, lines
    assert len(err) == 1 and err[0].startswith("robustlab: error: "), err
    assert "Traceback" not in err[0] and "weights_only=False" not in err[0]
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


@pytest.fixture
def no_attack(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if an attack starts: refusals must come before the expensive part."""

    def refuse(*a, **k):  # noqa: ANN002, ANN003
        raise AssertionError("the attack ran before the bad input was refused")

    monkeypatch.setattr(robustlab.evaluate, "eps_sweep", refuse)


# ------------------------------------------------------------------------- 4. damaged files
def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes({"empty": b"", "garbage": b"not a checkpoint " * 20, "cut": data[:200]}[how])


@pytest.mark.parametrize("how", ["empty", "garbage", "cut"])
def test_damaged_weights_file_is_one_line(weights, tmp_path, capsys, how) -> None:
    bad = tmp_path / "w.pt"
    bad.write_bytes(weights.read_bytes())
    _damage(bad, how)
    argv = ["eval", "--model", "lenet5", "--weights", str(bad), *MINI, "--n", "4", "--quiet"]
    _one_line_error(capsys, argv, str(bad), "download or export the weights again")


@pytest.mark.parametrize("how", ["empty", "garbage", "cut"])
def test_damaged_run_checkpoint_in_eval_run_and_train_resume(weights, tmp_path, capsys, how):
    run = _fake_run(tmp_path / "run", weights)
    _damage(run / "checkpoints" / "best.pt", how)
    argv = ["eval", "--run", str(run), "--n", "4", "--quiet"]
    _one_line_error(capsys, argv, "best.pt", "--which last")
    _damage(run / "checkpoints" / "last.pt", how)
    line = _one_line_error(capsys, ["train", "--resume", "--run-dir", str(run)], "last.pt")
    assert "cannot resume" in line and "new --run-dir" in line


def test_model_kw_with_a_bad_value_is_one_line(weights, capsys) -> None:
    argv = ["eval", "--model", "lenet5", "--weights", str(weights), *MINI, "--n", "4"]
    argv += ["--model-kw", "mean=abc", "--model-kw", "std=0.3"]
    _one_line_error(capsys, argv, "mean", "'abc'")


# ------------------------------------------------------------------------- 3. misleading input
def test_eps_above_one_is_refused_with_a_hint(weights, tmp_path, capsys, no_attack) -> None:
    argv = ["eval", "--model", "lenet5", "--weights", str(weights), *MINI, "--n", "4"]
    _one_line_error(capsys, [*argv, "--attack", "pgd", "--eps", "8"], "--eps 8", "8/255")
    _one_line_error(capsys, [*argv, "--attack", "pgd", "--eps-sweep", "0.1,8"], "8/255")
    from robustlab.attacks.threat import check_eps_scale

    check_eps_scale(1.5, "l2")  # L2 and L1 budgets above 1 are ordinary (diameter sqrt(d), d)
    run = _fake_run(tmp_path / "run", weights)
    _one_line_error(capsys, ["analyze", str(run), "--eps", "8"], "--eps 8", "8/255")
    target = tmp_path / "new"
    over = ["data.dataset=mnist-mini", "objective.name=pgd_at", "objective.eps=8"]
    _one_line_error(capsys, ["train", *over, "--run-dir", str(target)], "objective.eps", "8/255")
    over = ["data.dataset=mnist-mini", "validation.attack.eps=8"]
    _one_line_error(capsys, ["train", *over, "--run-dir", str(target)], "validation.attack.eps")
    assert not target.exists()


def test_resume_without_a_run_says_so(weights, tmp_path, capsys) -> None:
    missing = tmp_path / "missing"
    argv = ["train", "data.dataset=mnist-mini", "--resume", "--run-dir", str(missing)]
    _one_line_error(capsys, argv, "does not exist", "drop --resume")
    assert not missing.exists()
    run = _fake_run(tmp_path / "run", weights, last=False)
    argv = ["train", "--resume", "--run-dir", str(run)]
    _one_line_error(capsys, argv, "no checkpoint yet", "last.pt")


def test_objective_eps_override_moves_the_validation_attack(capsys) -> None:
    from robustlab.cli.train_output import describe_validation

    cfg = load_config("recipes/cpu/mart.yaml", ["objective.eps=0.1"])
    atk = cfg.validation.attack
    assert atk.eps == pytest.approx(0.1)
    # the recipe's 20 steps of 0.01 at eps 0.3 become steps of 0.01 * 0.1 / 0.3
    assert atk.step_size == pytest.approx(0.01 / 3)
    assert "eps 0.1," in describe_validation(cfg) and "0.003333" in describe_validation(cfg)
    kept = load_config("recipes/cpu/mart.yaml", ["objective.eps=0.1", "validation.attack.eps=0.2"])
    assert kept.validation.attack.eps == pytest.approx(0.2)  # set explicitly: kept
    assert kept.validation.attack.step_size == pytest.approx(0.01)


def test_analyze_n_above_the_split_and_duplicate_report_runs(weights, tmp_path, capsys) -> None:
    run = _fake_run(tmp_path / "run", weights)
    _one_line_error(capsys, ["analyze", str(run), "--n", "5000"], "--n 5000", "2000 images")
    assert not (run / "analysis").exists()
    out = tmp_path / "r.html"
    assert main(["report", str(run), str(run), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "given more than once" in err and out.is_file()


# ------------------------------------------------------------------------- 2. work never lost
def test_unwritable_outputs_are_refused_before_attacking(weights, tmp_path, capsys, no_attack):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    argv = ["eval", "--model", "lenet5", "--weights", str(weights), *MINI, "--n", "4"]
    argv += ["--attack", "fgsm", "--eps", "0.1", "--quiet"]
    ok = str(tmp_path / "ev")
    for extra, flag in (
        (["--run-dir", str(blocker / "ev")], "--run-dir"),
        (["--run-dir", ok, "--out", str(blocker / "s.json")], "--out"),
        (["--run-dir", ok, "--save-adv", str(blocker / "adv.pt")], "--save-adv"),
        (["--run-dir", ok, "--out", str(tmp_path)], "--out"),
    ):
        _one_line_error(capsys, [*argv, *extra], flag)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # nothing half-written


def test_evaluations_of_a_run_are_kept_apart(weights, tmp_path, capsys) -> None:
    run = _fake_run(tmp_path / "run", weights)
    base = ["eval", "--run", str(run), "--attack", "fgsm", "--n", "6", "--quiet", "--json"]
    for eps in ("0.1", "0.2"):
        assert main([*base, "--eps", eps]) == 0
    capsys.readouterr()
    names = sorted(p.name for p in (run / "eval").iterdir() if p.is_dir())
    assert names == ["fgsm-linf-eps0.1-n6-seed0", "fgsm-linf-eps0.2-n6-seed0"]
    index = json.loads((run / "eval" / "index.json").read_text())["evaluations"]
    s = json.loads((run / "eval" / names[1] / "summary.json").read_text())
    settings = s["attack_settings"]  # every option as it ran, defaults included
    assert settings["step_size"] == pytest.approx(0.2) and settings["random_start"] is False
    assert settings["loss"] == "ce" and settings["norm"] == "linf" and settings["seed"] == 0
    assert sorted(e["eps"] for e in index) == [0.1, 0.2]
    line = _one_line_error(capsys, [*base, "--eps", "0.1"], "already holds an evaluation")
    assert "eps0.1" in line
    out = tmp_path / "r.html"
    assert main(["report", str(run), "-o", str(out)]) == 0
    page = out.read_text()
    assert "eps=0.1" in page and "eps=0.2" in page  # the report shows both evaluations
    for name in names:  # accuracies print as the CLI prints them (xx.xx%)
        ev = json.loads((run / "eval" / name / "summary.json").read_text())
        assert f"{100 * ev['robust_accuracy']:.2f}%" in page
        assert f"{100 * ev['clean_accuracy']:.2f}%" in page


def test_demo_checks_its_options_before_training(tmp_path, capsys, monkeypatch) -> None:
    import robustlab.api

    def refuse(*a, **k):  # noqa: ANN002, ANN003
        raise AssertionError("training started before the options were checked")

    monkeypatch.setattr(robustlab.api, "train", refuse)
    root = tmp_path / "demo"
    for argv, flag in (
        (["--epochs", "0"], "demo --epochs"),
        (["--n-eval", "5000"], "demo --n-eval"),
        (["--n-analysis", "0"], "demo --n-analysis"),
        (["--n-train", "20000"], "demo --n-train"),
    ):
        _one_line_error(capsys, ["demo", "--run-dir", str(root), *argv], flag)
    blocker = tmp_path / "f"
    blocker.write_text("x")
    _one_line_error(capsys, ["demo", "--run-dir", str(blocker / "d")], "demo --run-dir")
    assert not root.exists()


# ------------------------------------------------------------------------- 5. readable output
def test_training_ends_with_a_summary_and_resume_says_where(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    over = ["data.dataset=mnist-mini", "model.name=lenet5", "data.n_train=128", "data.n_val=32"]
    over += ["train.epochs=1", "validation.n=32", "validation.attack.steps=2"]
    over += ["data.batch_size=64", "train.device=cpu", "train.progress=true"]
    assert main(["train", *over, "--run-dir", str(run)]) == 0
    captured = capsys.readouterr()
    out = captured.out
    # output is not a terminal here: no progress bar, one line per epoch counted from 1
    assert "it/s" not in captured.err and "\r" not in captured.err
    assert "robustlab: epoch 1/1, step 2, loss " in out and "val robust " in out
    assert "validation attack: pgd linf eps 0.3, 2 steps of 0.375" in out
    assert "final validation: clean " in out and "% , robust" not in out
    assert "best val_robust_acc:" in out and "(epoch 1 of 1)" in out
    assert "time:" in out and str(run / "checkpoints" / "best.pt") in out


def test_models_lists_architectures_and_every_option_has_help(capsys) -> None:
    import argparse

    from robustlab.cli import build_parser

    assert main(["models"]) == 0
    out = capsys.readouterr().out.splitlines()
    lenet = next(line.split() for line in out if line.startswith("lenet5 "))
    assert lenet[1:4] == ["1x28x28", "10", "none"]
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = [
        f"{name} {a.option_strings or a.dest}"
        for name, p in sub.choices.items()
        for a in p._actions
        if a.help is None and not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)
    ]
    assert missing == []


def test_rerunning_an_analysis_leaves_only_its_own_named_figures(weights, tmp_path) -> None:
    run = _fake_run(tmp_path / "run", weights)
    (run / "analysis").mkdir()
    stale = run / "analysis" / "margins_1.png"  # a figure of an earlier, other selection
    stale.write_bytes(b"old")
    assert main(["analyze", str(run), "--what", "logits", "--n", "40"]) == 0
    names = sorted(p.name for p in (run / "analysis").glob("*.png"))
    assert not stale.exists()
    assert names and all(n.startswith("logits_") for n in names)
    assert any("max-logit" in n for n in names)  # the name says what the figure shows


def test_ctrl_c_in_training_says_how_to_resume(tmp_path, capsys, monkeypatch) -> None:
    import robustlab.api

    def interrupted(*a, **k):  # noqa: ANN002, ANN003
        raise KeyboardInterrupt

    monkeypatch.setattr(robustlab.api, "train", interrupted)
    run = tmp_path / "run"
    assert main(["train", "data.dataset=mnist-mini", "--run-dir", str(run)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "robustlab: interrupted before the first checkpoint; nothing to resume, start again"
    ]
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"")  # a checkpoint was written
    assert main(["train", "data.dataset=mnist-mini", "--run-dir", str(run)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"robustlab: interrupted; continue from the last checkpoint with: "
        f"robustlab train --resume --run-dir {run}"
    ]
