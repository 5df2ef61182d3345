"""End to end on real MNIST: a standard and a PGD-adversarially trained LeNet-5 (the CPU
recipes, shortened) -> ``robustlab analyze`` -> the paper-A/C signals -> ``robustlab report``
-> the page checked in headless Chromium (no console error, every figure loaded, screenshot).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from robustlab.cli import main

REPO = Path(__file__).resolve().parents[1]

# Shortened CPU recipes: 3000 training images, no validation; PGD-AT keeps eps 0.3 with 3 steps
# of 0.1 and uses Adam without EMA, which reaches ~90% clean accuracy in two epochs.
_COMMON = [
    "data.n_train=3000", "data.n_val=0", "validation.every=0", "train.epochs=2",
    "train.progress=false", "train.log_every=0", "train.device=cpu",
    'callbacks=[{name: analysis, every: 1, kwargs: {what: "logits,fisher", n: 64}}]',
]  # fmt: skip
_AT = [
    "objective.steps=3", "objective.step_size=0.1", "optim.name=adam", "optim.lr=0.001",
    "optim.weight_decay=0", "train.ema_decay=0", "schedule.name=constant",
    "schedule.warmup_epochs=0",
]  # fmt: skip


@pytest.fixture(scope="session")
def mnist_runs(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> dict[str, Path]:
    """Train both models (about a minute on 2 busy cores) and analyse them with the CLI."""
    from robustlab.api import train  # composes the run: robustlab's callbacks by name
    from robustlab.config import load_config

    root = tmp_path_factory.mktemp("mnist_runs")
    runs = {}
    for name, recipe, extra in [("standard", "standard", []), ("pgd_at", "pgd_at", _AT)]:
        cfg = load_config(REPO / "recipes" / "cpu" / f"{recipe}.yaml",
                          [*_COMMON, *extra, f"data.data_dir={shared_data}"])  # fmt: skip
        runs[name] = train(cfg, run_dir=root / name)
    for run in runs.values():  # robust accuracy for the report's table
        code = main(["eval", "--run", str(run), "--attack", "pgd", "--eps", "0.3", "--n", "200",
                     "--data-dir", str(shared_data), "--quiet"])  # fmt: skip
        assert code == 0
    code = main(["analyze", str(runs["standard"]), str(runs["pgd_at"]), "--n", "64",
                 "--margin-steps", "15", "--data-dir", str(shared_data)])  # fmt: skip
    assert code == 0
    return runs


def _summary(run: Path) -> dict:
    return json.loads((run / "analysis" / "summary.json").read_text())


def test_adversarial_training_lowers_logits_and_fisher(mnist_runs: dict[str, Path]) -> None:
    std, at = _summary(mnist_runs["standard"]), _summary(mnist_runs["pgd_at"])
    # Both models are usable classifiers, so the comparison is not against a dead network.
    assert std["logits"]["correct"]["mean"] > 0.85 and at["logits"]["correct"]["mean"] > 0.75
    for stat in ("max_logit", "gap"):  # paper A
        s, a = std["logits"][stat], at["logits"][stat]
        assert a["ci_high"] < s["ci_low"], (stat, a, s)  # separated bootstrap intervals
    assert at["fisher"]["fisher_fro_mean"] < 0.5 * std["fisher"]["fisher_fro_mean"]  # paper C
    assert at["fisher"]["kl_metric"] < std["fisher"]["kl_metric"]
    assert at["jacobian"]["fro_mean"] < std["jacobian"]["fro_mean"]
    # Margins: every correctly classified point got a verified boundary point; AT moves it away.
    for s in (std, at):
        assert s["margins"]["frac_verified"] == 1.0
    assert at["margins"]["margin_mean"] > std["margins"]["margin_mean"]


def test_dynamics_come_from_the_run_objective(mnist_runs: dict[str, Path]) -> None:
    for name, objective in (("standard", "standard"), ("pgd_at", "pgd_at")):
        s = _summary(mnist_runs[name])["dynamics"]
        assert list(s["objectives"]) == [objective]  # the run's own objective by default
        d = s["objectives"][objective]
        assert 0 < d["frac_negative_speed"] + d["frac_positive_speed"] <= 1
        assert sum(d["count"]) == d["n"] == s["n_points"] > 0
        with np.load(mnist_runs[name] / "analysis" / "dynamics.npz") as z:
            assert np.isfinite(z[f"speed__{objective}"]).sum() == d["n"]
            same_sign = np.sign(z[f"speed__{objective}"]) == np.sign(z[f"speed_box__{objective}"])
            assert same_sign[np.isfinite(z[f"speed__{objective}"])].all()


def test_callback_recorded_each_epoch(mnist_runs: dict[str, Path]) -> None:
    for run in mnist_runs.values():
        lines = (run / "metrics.jsonl").read_text().splitlines()
        epochs = [r for r in map(json.loads, lines) if r.get("kind") == "epoch"]
        assert [r["epoch"] for r in epochs] == [0, 1]
        assert all("analysis/max_logit" in r and "analysis/fisher_fro" in r for r in epochs)


def test_report_loads_in_a_real_browser(mnist_runs: dict[str, Path], tmp_path_factory) -> None:
    from robustlab.report.browser import check_page, find_chromium

    out_dir = tmp_path_factory.mktemp("report")
    page = out_dir / "report.html"
    assert main(["report", str(mnist_runs["standard"]), str(mnist_runs["pgd_at"]),
                 "-o", str(page)]) == 0  # fmt: skip
    for run in mnist_runs.values():  # analyze also drew each run's own figures
        assert list((run / "analysis").glob("dynamics_*.png"))
    if find_chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: run scripts/browser-setup.sh as root")
        pytest.skip("chromium not installed (scripts/browser-setup.sh installs it as root)")
    text = page.read_text()
    assert text.count("(pgd, linf eps=0.3, n=200)") == 2  # robust accuracy of both runs
    name = "pgd-linf-eps0.3-n200-seed0"  # each evaluation of a run in its own folder
    ev = {
        k: json.loads((r / "eval" / name / "summary.json").read_text())
        for k, r in mnist_runs.items()
    }
    assert ev["pgd_at"]["robust_accuracy"] > ev["standard"]["robust_accuracy"] + 0.1
    result = check_page(page)
    assert result.errors == []
    assert result.title == "robustlab report"
    assert len(result.images) >= 12
    assert all(i["complete"] and i["naturalWidth"] > 0 for i in result.images), result.images
    shot = out_dir / "report_screenshot.png"
    shot.write_bytes(result.screenshot)
    assert result.screenshot[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    if os.environ.get("ROBUSTLAB_ARTIFACTS"):  # CI can upload the page and its screenshot
        dest = Path(os.environ["ROBUSTLAB_ARTIFACTS"])
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(page, dest / "report.html")
        shutil.copy(shot, dest / "report_screenshot.png")


def test_browser_check_catches_a_broken_page(tmp_path: Path) -> None:
    """The browser check itself can fail: a console error and a missing image are reported."""
    from robustlab.report.browser import check_page, find_chromium

    if find_chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: run scripts/browser-setup.sh as root")
        pytest.skip("chromium not installed (scripts/browser-setup.sh installs it as root)")
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><head><link rel='icon' href='data:,'><title>x</title>"
                   "</head><body><img src='missing.png' alt='gone'>"
                   "<script>console.error('broken figure')</script></body></html>")  # fmt: skip
    result = check_page(bad)
    assert any("broken figure" in e for e in result.errors)
    assert result.images[0]["naturalWidth"] == 0
