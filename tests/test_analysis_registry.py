"""The analysis registry end to end: a toy analysis registered in this file alone shows up in
``robustlab analyze``'s output, in the per-epoch log of a training run and in the HTML report;
and the registry's parsing rules (order, requirements, unknown names)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from robustlab.analysis.base import (
    Analysis,
    AnalysisInputs,
    AnalysisResult,
    Figure,
    analysis_names,
    parse_analyses,
    register_analysis,
)
from robustlab.cli import main
from robustlab.errors import RobustlabError

TOY = "toy_top_logit"


@register_analysis(TOY)
class ToyTopLogit(Analysis):
    """The mean of the top logit: one number, one per-sample array, one figure."""

    title = "Toy: the top logit"
    default = False  # other tests' default analyses stay the built-in ones
    LOGGED = (("top", "toy_top"),)
    ROWS = (("top", "toy mean top logit"),)
    HEADLINE = (("top", "toy top"),)

    def compute(self, inputs: AnalysisInputs) -> AnalysisResult:
        with torch.no_grad():
            top = inputs.model(inputs.x).max(1).values.double().cpu().numpy()
        return AnalysisResult({"top": float(top.mean())}, {"top": top})

    def figures(self, runs: Any, plot: Any) -> list[Figure]:
        rs = [r for r in runs if TOY in r.arrays]
        if not rs:
            return []
        png = plot.overlay_histograms({r.name: r.arrays[TOY]["top"] for r in rs}, "top logit")
        return [Figure(TOY, "Toy figure: the top logit of each test sample.", png)]


def _top_by_hand(run: Path, n: int, seed: int) -> float:
    from robustlab.analysis.run import select_samples
    from robustlab.data import load_split
    from robustlab.data.convert import to_float
    from robustlab.train import load_run_model

    model, _ = load_run_model(run, "last")
    test = load_split("mnist-mini", "test")
    idx = select_samples(len(test), n, seed)
    with torch.no_grad():
        return float(model(to_float(test.images[idx])).max(1).values.double().mean())


def test_a_toy_analysis_in_one_file_reaches_log_analyze_and_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    cb = [{"name": "analysis", "every": 1, "kwargs": {"what": f"logits,{TOY}", "n": 16}}]
    code = main([
        "train", "--run-dir", str(run), "data.dataset=mnist-mini", "data.n_train=128",
        "data.n_val=0", "data.batch_size=64", "validation.every=0", "train.epochs=1",
        "train.progress=false", "train.log_every=0", "train.device=cpu", "train.ema_decay=0",
        f"callbacks={json.dumps(cb)}",
    ])  # fmt: skip
    assert code == 0
    capsys.readouterr()
    # 1. the per-epoch training log: the toy's number, equal to a direct computation on the
    #    final weights (no EMA: the delivered model is the trained one)
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epoch = [r for r in recs if r.get("kind") == "epoch"][-1]
    assert epoch["analysis/toy_top"] == pytest.approx(_top_by_hand(run, 16, 0), rel=1e-6)
    assert "analysis/max_logit" in epoch  # the built-in ones still log beside it
    # 2. robustlab analyze: the headline and the stored summary and arrays
    code = main(["analyze", str(run), "--what", TOY, "--n", "16", "--no-figures"])
    out = capsys.readouterr().out
    assert code == 0 and "toy top" in out
    summary = json.loads((run / "analysis" / "summary.json").read_text())
    assert summary[TOY]["top"] == pytest.approx(_top_by_hand(run, 16, 0), rel=1e-6)
    with np.load(run / "analysis" / f"{TOY}.npz") as z:
        assert z["top"].shape == (16,)
    # 3. the HTML report: the section, the row and the figure
    page = tmp_path / "report.html"
    assert main(["report", str(run), "--out", str(page)]) == 0
    html = page.read_text()
    assert "Toy: the top logit" in html and "toy mean top logit" in html
    assert "Toy figure: the top logit of each test sample." in html


def test_registry_order_requirements_and_errors() -> None:
    names = analysis_names()
    assert names[:5] == ["logits", "margins", "dynamics", "jacobian", "fisher"]
    assert TOY in names and TOY not in analysis_names(default_only=True)
    assert parse_analyses(None) == ["logits", "margins", "dynamics", "jacobian", "fisher"]
    assert parse_analyses("fisher,dynamics") == ["margins", "dynamics", "fisher"]  # + requires
    with pytest.raises(RobustlabError, match="unknown analysis 'curvature'"):
        parse_analyses("logits,curvature")
    with pytest.raises(RobustlabError, match="no analysis named"):
        parse_analyses(" , ")
    with pytest.raises(TypeError, match="Analysis subclass"):
        register_analysis("not_an_analysis")(dict)  # type: ignore[arg-type]


def test_every_declared_row_logged_number_and_headline_resolves() -> None:
    """A renamed summary key would leave a report row empty or drop a logged number silently:
    every key the built-in analyses declare is present in what they compute."""
    from robustlab.analysis.base import registered_analyses, summary_value
    from robustlab.analysis.run import compute_analyses
    from robustlab.data import load_split
    from robustlab.data.convert import to_float
    from robustlab.models import create_model

    torch.manual_seed(0)
    model = create_model("lenet5", dataset="mnist").eval()
    split = load_split("mnist-mini", "test")
    x, y = to_float(split.images[:12]), split.labels[:12]
    y[:6] = model(x[:6]).argmax(1).detach()  # some correctly classified points for the margins
    built_in = ["logits", "margins", "dynamics", "jacobian", "fisher"]
    summaries, _ = compute_analyses(
        model, x, y, built_in, eps=0.3, objective="standard", train_batch=(x, y), margin_steps=10
    )
    for a in registered_analyses():
        if a.name not in built_in:
            continue
        s = summaries[a.name]
        for key, _ in (*a.ROWS, *a.LOGGED, *a.HEADLINE):
            assert summary_value(s, key) is not None, f"{a.name}: {key} not in its summary"
        assert a.headline(s), a.name
        rows = a.rows([s])
        assert rows and all(values[0] is not None for _, values in rows), a.name
        assert a.logged(s), a.name
