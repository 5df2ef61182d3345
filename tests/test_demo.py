"""The quickstart demo runs end to end (at a tiny size) and writes a report."""

from __future__ import annotations

import json
from pathlib import Path

from robustlab.cli import main


def test_demo_end_to_end_small(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    args = ["demo", "--run-dir", str(root), "--epochs", "1", "--n-train", "1000"]
    rc = main([*args, "--n-eval", "40", "--n-analysis", "16"])
    assert rc == 0
    report = (root / "report.html").read_text()
    assert "<img" in report and "standard" in report and "pgd_at" in report
    for name in ("standard", "pgd_at"):
        assert (root / name / "summary.json").exists()
        assert json.loads((root / name / "analysis" / "summary.json").read_text())
    # a second call finds the runs complete and does not retrain
    mtime = (root / "pgd_at" / "checkpoints" / "best.pt").stat().st_mtime
    assert main([*args, "--n-eval", "40", "--n-analysis", "16"]) == 0
    assert (root / "pgd_at" / "checkpoints" / "best.pt").stat().st_mtime == mtime
