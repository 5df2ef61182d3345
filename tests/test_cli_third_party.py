"""Command line of issue 10: --input-norm on eval (printed and recorded; the warning for
third-party weights in a normalizing model), attack ensembles ``A+B`` with a per-attack
breakdown and eps sweeps (AutoAttack included), and third-party weights in ``analyze`` and
``report`` (imported into a run directory that records their origin)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from robustlab.cli import main
from robustlab.cli.attack_spec import parse_spec
from robustlab.errors import RobustlabError


def _mnist(shared_data: Path) -> list[str]:
    return ["--dataset", "mnist", "--data-dir", str(shared_data)]


@pytest.fixture(scope="module")
def raw_lenet(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A LeNet-5 trained (three epochs on 512 MNIST-mini images) without input normalization,
    saved as a bare state dict (a third-party file)."""
    from robustlab.config import load_config
    from robustlab.train import load_run_model, train

    root = tmp_path_factory.mktemp("rawlenet")
    over = ["model.input_norm=none", "data.dataset=mnist-mini", "data.n_train=512"]
    over += ["data.batch_size=32", "train.epochs=3", "train.progress=false", "train.log_every=0"]
    over += ["validation.every=0"]
    run = train(load_config(None, over), root / "run")
    model, _ = load_run_model(run)
    path = root / "lenet_raw.pt"
    torch.save(model.state_dict(), path)
    from robustlab.data import load_split

    test = load_split("mnist", "test", root=shared_data)
    with torch.no_grad():
        pred = model(test.images[:200].float() / 255).argmax(1)
    (root / "correct.txt").write_text(str(int((pred == test.labels[:200]).sum())))
    return path


def test_eval_input_norm_each_option(
    raw_lenet: Path, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["eval", "--model", "lenet5", "--weights", str(raw_lenet), *_mnist(shared_data)]
    base += ["--n", "200", "--quiet"]
    acc = {}
    for option in (None, "none", "dataset", "0.1307,0.3081"):
        extra = [] if option is None else ["--input-norm", option]
        out = tmp_path / f"{option}.json"
        assert main([*base, *extra, "--out", str(out)]) == 0
        err = capsys.readouterr().err
        res = json.loads(out.read_text())
        applied = res["input_normalization"]["applied"]
        assert applied == (option != "none")  # lenet5's default (auto) normalizes with MNIST's
        warned = "robustlab: warning:" in err and "--input-norm none" in err
        assert warned == applied  # a bare state dict into a normalizing model warns
        acc[option] = res["correct"]
    # raw inputs reproduce the trained model; the three normalizing options agree with each
    # other (the MNIST constants) and not with the trained model's own numbers
    reference = int((raw_lenet.parent / "correct.txt").read_text())
    assert acc["none"] == reference
    assert acc[None] == acc["dataset"] == acc["0.1307,0.3081"]
    main([*base, "--input-norm", "none"])
    assert "input normalization: none" in capsys.readouterr().out
    assert main([*base, "--input-norm", "zscore"]) == 2
    assert "input_norm 'zscore'" in capsys.readouterr().err


def test_ensemble_spec_worst_case_and_breakdown(
    trades_checkpoint: Path, shared_data: Path, tmp_path: Path
) -> None:
    spec = "pgd:loss=ce,steps=2+pgd:loss=margin,steps=3+fgsm"
    args = ["eval", "--model", "smallcnn", "--weights", str(trades_checkpoint)]
    args += [*_mnist(shared_data), "--n", "24", "--attack", spec, "--eps", "0.45"]
    args += ["--quiet", "--run-dir", str(tmp_path / "ev")]
    assert main(args) == 0
    s = json.loads((tmp_path / "ev" / "summary.json").read_text())
    labels = [p["attack"] for p in s["per_attack"]]
    assert labels == ["pgd:loss=ce,steps=2", "pgd:loss=margin,steps=3", "fgsm"]
    broken = sum(p["broken"] for p in s["per_attack"])
    n, clean, robust = s["n"], s["clean_accuracy"], s["robust_accuracy"]
    assert round(n * clean) - broken == round(n * robust)  # worst case over the members
    # each attacks only the survivors of the previous ones
    for a, b in zip(s["per_attack"], s["per_attack"][1:], strict=False):
        assert b["attacked"] == a["attacked"] - a["broken"]
    recs = [json.loads(x) for x in (tmp_path / "ev" / "samples.jsonl").read_text().splitlines()]
    assert {r["broken_by"] for r in recs if not r["robust_correct"] and r["clean_correct"]} <= set(
        labels
    )


def test_spec_parsing_and_errors() -> None:
    assert parse_spec("pgd:loss=margin,step_size=2/255+apgd-t") == [
        ("pgd:loss=margin,step_size=2/255", "pgd", {"loss": "margin", "step_size": 2 / 255}),
        ("apgd-t", "apgd-t", {}),
    ]
    assert [m[0] for m in parse_spec("pgd+pgd")] == ["pgd#1", "pgd#2"]
    for bad in ("pgd++fgsm", "pgd:loss", "pgd:eps=0.1"):
        with pytest.raises(RobustlabError):
            parse_spec(bad)


def test_eps_sweep_with_autoattack_and_an_ensemble(
    raw_lenet: Path, shared_data: Path, tmp_path: Path
) -> None:
    base = ["eval", "--model", "lenet5", "--weights", str(raw_lenet), "--input-norm", "none"]
    base += [*_mnist(shared_data), "--n", "6", "--quiet", "--eps-sweep", "0.2,0.4"]
    for name, spec in (("aa", "autoattack"), ("ens", "fgsm+pgd:steps=3")):
        extra = (
            ["--version", "standard", "--no-sanity", "--steps", "5", "--n-queries", "50"]
            if name == "aa"
            else []
        )
        assert main([*base, "--attack", spec, *extra, "--run-dir", str(tmp_path / name)]) == 0
        rows = json.loads((tmp_path / name / "summary.json").read_text())["eps_sweep"]
        assert [r["eps"] for r in rows] == [0.2, 0.4]
        assert rows[1]["robust_accuracy"] <= rows[0]["robust_accuracy"]
        assert all(r["per_attack"] for r in rows)


def test_analyze_and_report_take_third_party_weights(
    trades_checkpoint: Path, shared_data: Path, tmp_path: Path
) -> None:
    from robustlab.config import load_config
    from robustlab.train import train

    imp = tmp_path / "trades-smallcnn"
    args = ["analyze", "--model", "smallcnn", "--weights", str(trades_checkpoint)]
    args += [*_mnist(shared_data), "--import-dir", str(imp), "--what", "logits", "--n", "32"]
    assert main([*args, "--no-figures"]) == 0
    origin = json.loads((imp / "summary.json").read_text())["imported"]
    assert origin["weights"] == str(trades_checkpoint.resolve()) and len(origin["sha256"]) == 64
    assert origin["input_normalization"]["applied"] is False
    meta = json.loads((imp / "analysis" / "summary.json").read_text())["meta"]
    assert meta["input_normalization"]["applied"] is False
    # a robustlab run on the same dataset, side by side in one report with the imported model
    over = ["data.dataset=mnist", f"data.data_dir={shared_data}", "data.n_train=256"]
    over += ["train.epochs=1", "train.progress=false", "train.log_every=0", "validation.every=0"]
    run = train(load_config(None, over), tmp_path / "ours")
    assert main(["eval", "--run", str(run), "--n", "16", "--attack", "fgsm", "--eps", "0.1",
                 "--eps-sweep", "0.05,0.1", "--quiet"]) == 0  # fmt: skip
    out = tmp_path / "report.html"
    rargs = ["report", str(run), "--model", "smallcnn", "--weights", str(trades_checkpoint)]
    rargs += ["--dataset", "mnist", "--import-dir", str(imp), "-o", str(out)]
    assert main(rargs) == 0  # reuses the same import
    page = out.read_text()
    assert "trades-smallcnn" in page and "ours" in page
    assert "imported weights:" in page and trades_checkpoint.name in page
    assert "Robust accuracy against eps" in page
    assert main(["analyze", "--model", "smallcnn"]) == 2  # needs --weights and --dataset too
