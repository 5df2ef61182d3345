"""The report, the analyze/report commands, the training callback and their errors, on tiny
real runs (LeNet-5 trained for one short epoch on the embedded MNIST sample)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from robustlab.cli import main
from robustlab.errors import ConfigError


def _train(run_dir: Path, seed: int, callbacks: list | None = None) -> Path:
    from robustlab.api import train  # composes the run: robustlab's callbacks by name
    from robustlab.config import load_config

    overrides = [
        "data.dataset=mnist-mini", "data.n_train=256", "data.n_val=0", "data.batch_size=64",
        "validation.every=0", "train.epochs=2", "train.progress=false", "train.log_every=0",
        "train.device=cpu", "optim.lr=0.05", f"seed={seed}",
        f"callbacks={json.dumps(callbacks or [])}",
    ]  # fmt: skip
    return train(load_config(None, overrides), run_dir=run_dir)


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("tiny_runs")
    cb = [{"name": "analysis", "every": 1, "kwargs": {"what": "logits,jacobian", "n": 16}}]
    return [_train(root / "run_a", 0, cb), _train(root / "run_b", 1)]


def _one_line_error(capsys: pytest.CaptureFixture[str], code: int, *needles: str) -> None:
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("robustlab: error:") and "\n" not in err, err
    for n in needles:
        assert n in err, err


def test_callback_records_analyses_every_epoch(tiny_runs: list[Path]) -> None:
    recs = [json.loads(line) for line in (tiny_runs[0] / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in recs if r.get("kind") == "epoch"]
    assert len(epochs) == 2
    for r in epochs:
        assert r["analysis/max_logit"] > 0 and r["analysis/jacobian_fro"] > 0
        assert 0 <= r["analysis/clean_acc"] <= 1


def test_callback_rejects_bad_options() -> None:
    from robustlab.analysis.callbacks import AnalysisCallback

    with pytest.raises(ConfigError, match="unknown analysis 'curvature'"):
        AnalysisCallback(what="logits,curvature")
    with pytest.raises(ConfigError, match="n must be"):
        AnalysisCallback(n=0)


def test_analyze_and_report_write_a_self_contained_page(
    tiny_runs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    what = ["--what", "logits,jacobian,fisher", "--n", "48", "--no-figures"]
    args = ["analyze", *map(str, tiny_runs), *what]
    assert main(args) == 0
    for run in tiny_runs:
        s = json.loads((run / "analysis" / "summary.json").read_text())
        assert set(s) >= {"logits", "jacobian", "fisher", "meta"} and s["meta"]["n"] == 48
        assert (run / "analysis" / "logits.npz").is_file()
    out = tmp_path / "report.html"
    assert main(["report", *map(str, tiny_runs), "-o", str(out)]) == 0
    page = out.read_text()
    srcs = re.findall(r"<img src=\"([^\"]+)\"", page)
    assert len(srcs) >= 8  # histograms, disagreement scatter and grids, Jacobian, Fisher, epochs
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r"(src|href)=[\"']?(https?:|//)", page)  # nothing fetched from outside
    assert "run_a" in page and "run_b" in page and "Spearman" in page
    mean = json.loads((tiny_runs[1] / "analysis" / "summary.json").read_text())
    assert f"{mean['logits']['max_logit']['mean']:.4g}" in page  # the table shows the numbers


def test_report_refuses_runs_on_different_datasets(
    tiny_runs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "fashion_run"
    other.mkdir()
    cfg = yaml.safe_load((tiny_runs[0] / "config.yaml").read_text())
    cfg["data"]["dataset"] = "fashion-mnist"
    (other / "config.yaml").write_text(yaml.safe_dump(cfg))
    code = main(["report", str(tiny_runs[0]), str(other), "-o", str(tmp_path / "r.html")])
    _one_line_error(capsys, code, "different datasets", "fashion-mnist")
    assert not (tmp_path / "r.html").exists()


def test_analyze_reports_a_run_without_checkpoint(
    tiny_runs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.yaml").write_text((tiny_runs[0] / "config.yaml").read_text())
    code = main(["analyze", str(tiny_runs[0]), str(bare), "--what", "logits"])
    _one_line_error(capsys, code, "no checkpoint", str(bare))
    code = main(["analyze", str(tmp_path / "missing")])
    _one_line_error(capsys, code, "not found")
    code = main(["report", str(tmp_path), "-o", str(tmp_path / "r.html")])
    _one_line_error(capsys, code, "not a run directory")


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--what", "logits,curvature"], "unknown analysis 'curvature'"),
        (["--norm", "l7"], "unknown norm"),
        (["--eps", "-1"], "eps must be positive"),
        (["--n", "0"], "--n must be positive"),
    ],
)
def test_analyze_rejects_bad_options(
    tiny_runs: list[Path], args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _one_line_error(capsys, main(["analyze", str(tiny_runs[0]), *args]), needle)


def test_dynamics_for_several_objectives_from_one_checkpoint(
    tiny_runs: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    run = str(tiny_runs[1])
    objectives = ["--objective", "standard", "--objective", "pgd_at:eps=0.3,steps=1"]
    args = ["analyze", run, "--what", "dynamics", "--n", "16", "--margin-steps", "10",
            *objectives, "--no-figures"]  # fmt: skip
    assert main(args) == 0
    s = json.loads((tiny_runs[1] / "analysis" / "summary.json").read_text())["dynamics"]
    assert list(s["objectives"]) == ["standard", "pgd_at:eps=0.3,steps=1"]
    with np.load(tiny_runs[1] / "analysis" / "dynamics.npz") as z:
        a, b = z["speed__standard"], z["speed__pgd_at:eps=0.3,steps=1"]
    ok = np.isfinite(a)
    assert ok.sum() == s["n_points"] > 0 and np.isfinite(b[ok]).all()
    assert not np.allclose(a[ok], b[ok])  # two velocities, two sets of speeds
    bad = ["analyze", run, "--what", "dynamics", "--objective", "pgd_at:eps=-1"]
    _one_line_error(capsys, main(bad), "eps")
    _one_line_error(capsys, main([*bad[:-1], "nonsense"]), "unknown objective 'nonsense'")
