"""Papers C (metric) and D (dyart) on the reproduce engine: ``reproduce all --dry-run`` lists
the plan of all four papers, and the claim helpers on synthetic numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from robustlab.cli import main


def test_dry_run_of_all_lists_the_four_papers_plans(tmp_path, capsys) -> None:
    rd = tmp_path / "root"
    assert main(["reproduce", "all", "--dry-run", "--run-dir", str(rd)]) == 0  # cpu scale
    out = capsys.readouterr().out
    assert "logits, uncertainty, metric, dyart" in out.splitlines()[0]
    for s in (0, 1, 2):
        for key in (f"std-s{s}", f"atentm-s{s}",  # A and B
                    f"metric-std-s{s}", f"metric-at-s{s}", f"metric-fisher-s{s}",  # C
                    f"dyart-burnin-s{s}", f"dyart-atpart-s{s}", f"dyart-at-s{s}",
                    f"dyart-dyart-s{s}"):  # fmt: skip
            assert f"] {key}:" in out, key
    # D's robust runs start from the shared burn-in, after it
    assert f"model.weights={rd.resolve()}/runs/dyart-burnin-s0" in out
    assert "(after dyart-burnin-s0)" in out
    assert "estimated cost" in out and not rd.exists()


def test_dyart_runs_share_optimizer_and_budget() -> None:
    from pathlib import Path

    from robustlab.reproduce.plan import PlanContext, get_paper

    ctx = PlanContext("cpu", [0], Path("/tmp/x"))
    specs = {s.key: s for s in get_paper("dyart").runs(ctx)}
    at, dy = specs["dyart-at-s0"].overrides, specs["dyart-dyart-s0"].overrides
    for o in ("optim.nesterov=true", "optim.clip_grad_norm=1.0", "train.epochs=2"):
        assert o in at and o in dy
    assert "objective.burn_in=0" in dy  # the burn-in is the shared natural run


def test_negative_below_eps_counts_only_small_finite_margins() -> None:
    from robustlab.reproduce.papers.dyart_claims import negative_below_eps

    r = np.array([0.01, 0.05, 0.2, np.nan, 0.02])
    v = np.array([-1.0, 2.0, -3.0, -1.0, np.nan])
    got = negative_below_eps(r, v, eps=0.1)
    assert got[:2].tolist() == [1.0, 0.0] and all(math.isnan(g) for g in got[2:])


def test_matched_epoch_and_spearman_over_epochs() -> None:
    from robustlab.reproduce.papers.metric import spearman_over_epochs
    from robustlab.reproduce.papers.metric_claims import matched_epoch

    correct = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0]], dtype=float)
    assert matched_epoch(correct, 0.5) == 1 and matched_epoch(correct, 0.9) == 2
    rising = np.array([[1.0, 2.0], [2.0, 3.0], [4.0, 5.0]])  # (epochs, images)
    acc = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])  # image means 0.5, 0.5, 1 in full
    idx = np.array([0, 1, 1])  # a bootstrap draw: image 1 twice -> means 2/3, 1/3, 1
    assert spearman_over_epochs(rising, acc)(idx) == pytest.approx(0.5)
    assert spearman_over_epochs(rising, rising)(idx) == pytest.approx(1.0)
    assert spearman_over_epochs(-rising, rising)(np.arange(2)) == pytest.approx(-1.0)


@pytest.mark.parametrize("paper", ["metric", "dyart"])
def test_gpu_scale_plans_of_c_and_d(tmp_path, capsys, paper: str) -> None:
    rd = tmp_path / "root"
    argv = ["reproduce", paper, "--scale", "gpu", "--dry-run", "--run-dir", str(rd)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "cifar10" in out and f"{paper}-" in out and not rd.exists()
