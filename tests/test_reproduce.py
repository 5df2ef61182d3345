"""robustlab reproduce: verdict logic on synthetic per-seed numbers, the claims.json schema,
bad input (one-line error, nothing written), and a plan killed mid-way and rerun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from robustlab.cli import main
from robustlab.errors import RobustlabError
from robustlab.reproduce import Claim, comparison, mean_diff, verdict_of
from robustlab.reproduce.claims import combine_verdicts
from robustlab.reproduce.outputs import claims_document, claims_markdown, validate_claims

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ verdicts
@pytest.mark.parametrize(
    ("per_seed", "interval", "expect", "verdict"),
    [
        ([0.10, 0.20, 0.15], (0.05, 0.22), 1, "holds"),
        ([0.10, -0.02, 0.20], (0.01, 0.20), 1, "mixed"),  # one seed disagrees
        ([0.10, 0.02, 0.20], (-0.01, 0.20), 1, "mixed"),  # interval includes zero
        ([-0.10, -0.20, 0.05], (-0.2, 0.0), 1, "fails"),  # seed mean the other way
        ([0.0, 0.0, 0.0], (0.0, 0.0), 1, "fails"),  # no difference at all
        ([-0.10, -0.20, -0.15], (-0.22, -0.05), -1, "holds"),  # a claimed decrease
        ([0.10, 0.20, 0.15], (0.05, 0.22), -1, "fails"),
    ],
)
def test_verdict_of(per_seed, interval, expect, verdict) -> None:
    assert verdict_of(per_seed, interval, expect) == verdict


def test_combined_verdict_is_a_conjunction() -> None:
    assert combine_verdicts(["holds", "holds"]) == "holds"
    assert combine_verdicts(["holds", "mixed"]) == "mixed"
    assert combine_verdicts(["holds", "mixed", "fails"]) == "fails"
    with pytest.raises(RobustlabError):
        combine_verdicts([])


def _seeds(shifts: list[float], n: int = 400) -> list:
    """Per-seed statistics: model a's per-sample values minus model b's, shifted per seed."""
    rng = np.random.default_rng(0)
    out = []
    for d in shifts:
        b = rng.normal(0.0, 1.0, n)
        out.append(mean_diff(b + d + rng.normal(0, 0.1, n), b))
    return out


def test_comparison_on_synthetic_seeds() -> None:
    # paired samples, noise sd 0.1 per sample: the seed mean's interval is about +-0.01
    assert comparison("q", _seeds([0.3, 0.25, 0.35]), 400, n_boot=200).verdict == "holds"
    assert comparison("q", _seeds([0.3, -0.05, 0.35]), 400, n_boot=200).verdict == "mixed"
    assert comparison("q", _seeds([-0.3, -0.2, 0.1]), 400, n_boot=200).verdict == "fails"
    c = comparison("q", _seeds([0.3, 0.25, 0.35]), 400, n_boot=200)
    assert c.mean == pytest.approx(np.mean(c.per_seed))
    assert c.interval[0] < c.mean < c.interval[1]


# ------------------------------------------------------------------ claims.json schema
def _claim() -> Claim:
    comp = comparison("x", _seeds([0.3, 0.2]), 400, n_boot=50)
    return Claim(
        "Z1",
        "toy",
        "statement",
        "paper",
        [comp],
        [0, 1],
        400,
        tables={"t": {"columns": ["a", "b"], "rows": [["x", 0.5]]}},
    )


def test_claims_json_schema_round_trip() -> None:
    doc = json.loads(json.dumps(claims_document([_claim()], {"command": "c"})))
    validate_claims(doc)
    c = doc["claims"][0]
    assert set(c) >= {"id", "statement", "source", "verdict", "seeds", "comparisons"}
    comp = c["comparisons"][0]
    assert set(comp) >= {"quantity", "per_seed", "mean", "sd", "interval", "verdict"}
    assert len(comp["per_seed"]) == len(c["seeds"]) == 2
    md = claims_markdown(doc, {"toy": "Toy"})
    assert "| **Z1** [paper] | **holds** |" in md


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: d.pop("schema_version"),
        lambda d: d["claims"][0].pop("id"),
        lambda d: d["claims"][0].update(verdict="maybe"),
        lambda d: d["claims"][0].update(source="blog"),
        lambda d: d["claims"][0]["comparisons"][0]["per_seed"].pop(),
        lambda d: d["claims"][0]["comparisons"][0].update(interval=[0.1]),
        lambda d: d["claims"][0].update(comparisons=[]),
    ],
)
def test_claims_json_schema_rejects(breakage) -> None:
    doc = json.loads(json.dumps(claims_document([_claim()], {})))
    breakage(doc)
    with pytest.raises(RobustlabError):
        validate_claims(doc)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nopaper"], "unknown paper"),
        (["logits", "--scale", "huge"], "unknown scale"),
        (["logits", "--seeds", "0,x"], "--seeds"),
        (["logits", "--seeds", "1.5"], "--seeds"),
        (["logits", "--jobs", "0"], "--jobs"),
        (["logits", "--launcher", "pbs"], "unknown launcher"),
    ],
)
def test_bad_input_one_line_nothing_written(tmp_path, capsys, args, message) -> None:
    rd = tmp_path / "root"
    assert main(["reproduce", *args, "--run-dir", str(rd)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not rd.exists()


def test_unwritable_run_dir(tmp_path, capsys) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    for rd in (blocker / "sub", blocker):
        assert main(["reproduce", "logits", "--scale", "tiny", "--run-dir", str(rd)]) == 2
        err = capsys.readouterr().err.strip()
        assert "run directory" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_dry_run_prints_plan_writes_nothing(tmp_path, capsys, shared_root) -> None:
    rd = tmp_path / "root"
    assert (
        main(
            [
                "reproduce",
                "all",
                "--scale",
                "tiny",
                "--seeds",
                "0",
                "--dry-run",
                "--run-dir",
                str(rd),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "student-intact-s0" in out and "estimated cost" in out
    assert not rd.exists()


# ------------------------------------------------------------------ killed and rerun
def _cmd(rd: Path) -> list[str]:
    code = (
        "import sys; sys.path.insert(0, 'tests'); import reproduce_toy; "
        "from robustlab.cli import main; raise SystemExit(main(sys.argv[1:]))"
    )
    return [
        sys.executable,
        "-c",
        code,
        "reproduce",
        "toy",
        "--scale",
        "tiny",
        "--seeds",
        "0",
        "--run-dir",
        str(rd),
    ]


def _env() -> dict[str, str]:
    return os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def test_killed_plan_resumes_without_retraining(tmp_path) -> None:
    rd = tmp_path / "root"
    runs = rd / "runs"
    proc = subprocess.Popen(
        _cmd(rd),
        cwd=REPO,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if (runs / "a-s0" / "summary.json").is_file() and (
                runs / "b-s0" / "checkpoints" / "last.pt"
            ).is_file():
                break
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    complete = {p.parent.name for p in runs.glob("*/summary.json")}
    assert "a-s0" in complete and "c-s0" not in complete  # killed mid-plan
    stamps = {k: (runs / k / "summary.json").stat().st_mtime_ns for k in complete}
    ck_a = (runs / "a-s0" / "checkpoints" / "last.pt").stat().st_mtime_ns
    partial = {
        p.name
        for p in runs.iterdir()
        if p.name not in complete and (p / "checkpoints" / "last.pt").is_file()
    }
    configs = {k: (runs / k / "config.yaml").stat().st_mtime_ns for k in partial}
    done = subprocess.run(
        _cmd(rd), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert {p.parent.name for p in runs.glob("*/summary.json")} == {"a-s0", "b-s0", "c-s0"}
    for k, t in stamps.items():  # finished runs reused as they were
        assert (runs / k / "summary.json").stat().st_mtime_ns == t
        assert f"reuse {k}" in done.stdout
    assert (runs / "a-s0" / "checkpoints" / "last.pt").stat().st_mtime_ns == ck_a
    for k, t in configs.items():  # a killed run resumed from its checkpoint (not restarted)
        assert (runs / k / "config.yaml").stat().st_mtime_ns == t
    doc = json.loads((rd / "claims.json").read_text())
    validate_claims(doc)
    assert [c["id"] for c in doc["claims"]] == ["T1"]


def test_failed_run_does_not_stop_the_others(tmp_path, capsys) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    import reproduce_toy  # noqa: F401  (registers the toy papers)

    rd = tmp_path / "root"
    args = ["reproduce", "toyfail", "--scale", "tiny", "--seeds", "0", "--run-dir", str(rd)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "b-s0: failed" in err[0] and "c-s0: skipped" in err[0]
    assert (rd / "runs" / "a-s0" / "summary.json").is_file()  # the independent run finished
    assert list((rd / "runs" / "a-s0" / "eval").glob("reproduce-*.json"))  # and was evaluated
    assert not (rd / "runs" / "c-s0").exists()
    assert not (rd / "claims.json").exists()


def test_finished_run_with_other_settings_is_not_reused(tmp_path, capsys) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    import reproduce_toy  # noqa: F401  (registers the toy papers)

    rd = tmp_path / "root"
    args = ["reproduce", "toy", "--scale", "tiny", "--seeds", "0", "--run-dir", str(rd)]
    assert main(args) == 0
    capsys.readouterr()
    cfg = rd / "runs" / "b-s0" / "config.yaml"
    cfg.write_text(cfg.read_text().replace("epochs: 3", "epochs: 2"))  # a stale run
    stamp = (rd / "runs" / "b-s0" / "summary.json").stat().st_mtime_ns
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "b-s0" in err[0] and "train.epochs" in err[0]
    assert (rd / "runs" / "b-s0" / "summary.json").stat().st_mtime_ns == stamp  # left alone


def test_submitit_launcher_local_executor(tmp_path) -> None:
    """``--launcher slurm`` goes through submitit; its local executor stands in for Slurm."""
    pytest.importorskip("submitit")
    sys.path.insert(0, str(REPO / "tests"))
    import reproduce_toy  # noqa: F401  (registers the toy papers)

    from robustlab.reproduce import reproduce

    rd = tmp_path / "root"
    out = reproduce(
        "toy",
        "tiny",
        [0],
        rd,
        jobs=2,
        launcher="slurm",
        cluster="local",
        slurm={"timeout_min": 30, "slurm_partition": "gpu"},  # slurm_* is ignored by local
        echo=False,
    )
    assert [c["id"] for c in out["toy"]] == ["T1"]
    assert {p.parent.name for p in (rd / "runs").glob("*/summary.json")} == {"a-s0", "b-s0", "c-s0"}
    assert list((rd / "submitit").iterdir())  # the jobs went through submitit
    log = [json.loads(line) for line in (rd / "reproduce.jsonl").read_text().splitlines()]
    assert sum(r["event"] == "done" for r in log) == 6  # 3 trainings + 3 evaluations


@pytest.mark.parametrize(
    "extra",
    [
        ["--slurm", "gpus_per_node"],  # no value
        ["--slurm", "gpus per node=1"],  # not a name
        ["--slurm", "gpus_per_node=1"],  # without --launcher slurm
    ],
)
def test_bad_slurm_parameters_fail_before_any_run(tmp_path, capsys, extra) -> None:
    """A malformed --slurm item, or one without --launcher slurm: one line, nothing written."""
    rd = tmp_path / "root"
    args = ["reproduce", "uncertainty", "--seeds", "0", "--run-dir", str(rd), *extra]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--slurm" in err
    assert not rd.exists()


def test_slurm_parameters_parse() -> None:
    from robustlab.reproduce.runner import parse_slurm_params

    got = parse_slurm_params(["slurm_partition=gpu", "gpus_per_node=1", "timeout_min = 90"])
    assert got == {"slurm_partition": "gpu", "gpus_per_node": 1, "timeout_min": 90}
    assert parse_slurm_params(None) == {}


def test_missing_dataset_fails_before_any_run(tmp_path, capsys, monkeypatch) -> None:
    """A plan on data that is not on disk is refused up front: one line, nothing written."""
    # --data-dir sets ROBUSTLAB_DATA in this process; monkeypatch restores it after the test
    monkeypatch.setenv("ROBUSTLAB_DATA", str(tmp_path))
    rd = tmp_path / "root"
    empty = tmp_path / "no-data"
    empty.mkdir()
    args = ["reproduce", "uncertainty", "--scale", "cpu", "--seeds", "0", "--run-dir", str(rd)]
    assert main([*args, "--data-dir", str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert "fashion-mnist" in err and "not found" in err and len(err.splitlines()) == 1
    assert not rd.exists()
    # planning needs no data (a login node); the plan is printed, nothing written
    assert main([*args, "--dry-run", "--data-dir", str(empty)]) == 0
    assert "std-s0" in capsys.readouterr().out and not rd.exists()


@pytest.mark.parametrize("scale", ["gpu", "paper"])
def test_every_planned_recipe_exists_at_every_scale(tmp_path, scale) -> None:
    """The four papers plan only recipes that ship (B's EntM / LS at the paper-recipe scales)."""
    from robustlab.reproduce.plan import PlanContext, get_paper, merge_runs

    ctx = PlanContext(scale, [0], tmp_path / "root", {})
    papers = [get_paper(n) for n in ("logits", "uncertainty", "metric", "dyart")]
    specs = merge_runs(papers, ctx)
    missing = [s.recipe for s in specs if not s.recipe_path().is_file()]
    assert specs and not missing
    assert {"entm-s0", "ls-s0"} <= {s.key for s in specs}
