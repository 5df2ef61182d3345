"""The built package: ``python -m build`` makes a wheel and an sdist; the wheel, installed into a
fresh virtual environment, runs ``robustlab --version``, ``robustlab data check`` and a tiny
``robustlab demo`` from a directory outside the repository, with its package data (the embedded
MNIST slice, its licence, the recipes).

The fresh environment reuses the installed dependencies (torch, numpy, ...) of the environment
running the tests through a ``.pth`` file, so the test needs no network and no torch download;
robustlab itself comes only from the wheel (checked). About 1.5 minutes on 2 cores: slow, run
as its own step of ``.ci/run``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

import robustlab

REPO = Path(__file__).resolve().parents[1]
_SKIP = {".git", ".venv", "runs", "build", "dist", "site", ".pytest_cache", ".ruff_cache"}


def _copy_source(dst: Path) -> None:
    """The repository's files, without environments, runs and build outputs."""

    def ignore(folder: str, names: list[str]) -> set[str]:
        return {n for n in names if n in _SKIP or n.endswith(".egg-info") or n == "__pycache__"}

    shutil.copytree(REPO, dst, ignore=ignore)


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 300) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}: {proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_wheel_installs_and_runs_in_a_fresh_venv(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    src, dist = tmp_path / "src", tmp_path / "dist"
    _copy_source(src)
    build = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(src)]
    _run(build, tmp_path, env)
    version = robustlab.__version__
    wheel = dist / f"robustlab-{version}-py3-none-any.whl"
    sdist = dist / f"robustlab-{version}.tar.gz"
    assert wheel.is_file() and sdist.is_file(), sorted(p.name for p in dist.iterdir())
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in (
        "robustlab/data/embedded/mnist_mini.npz",
        "robustlab/data/embedded/LICENSE",
        "robustlab/recipes/cpu/pgd_at.yaml",
        "robustlab/recipes/paper/dyart.yaml",
        "robustlab/py.typed",
    ):
        assert shipped in names, shipped
    n_recipes = len(list((REPO / "recipes").glob("*/*.yaml")))
    assert sum(n.startswith("robustlab/recipes/") for n in names) == n_recipes
    with tarfile.open(sdist) as tar:
        assert f"robustlab-{version}/recipes/cpu/pgd_at.yaml" in tar.getnames()

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, env)
    py = venv / "bin" / "python"
    purelib = _run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path, env
    ).strip()
    # the dependencies (torch, numpy, yaml, safetensors, matplotlib) of this environment
    (Path(purelib) / "_outer_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-index"]
    _run([*pip, "--no-deps", str(wheel)], tmp_path, env)

    work = tmp_path / "elsewhere"  # no recipes/ or robustlab/ here
    work.mkdir()
    cli = str(venv / "bin" / "robustlab")
    assert _run([cli, "--version"], work, env).strip() == f"robustlab {version}"
    where = _run([str(py), "-c", "import robustlab; print(robustlab.__file__)"], work, env)
    assert Path(where.strip()).is_relative_to(venv)  # the wheel's copy, not the repository's

    checked = json.loads(_run([cli, "data", "check", "mnist-mini", "--json"], work, env))
    found = [(d["name"], d["status"], d["splits"]) for d in checked["datasets"]]
    assert found == [("mnist-mini", "ok", {"train": 10000, "test": 2000})], checked
    assert Path(checked["datasets"][0]["path"]).is_relative_to(venv)
    code = (
        "from robustlab.config import load_config; from robustlab.resources import *; "
        "c = load_config('recipes/cpu/trades.yaml'); "
        "print(c.objective.name, len(shipped_recipes()))"
    )
    assert _run([str(py), "-c", code], work, env).split() == ["trades", str(n_recipes)]

    demo = [cli, "demo", "--run-dir", "q", "--epochs", "1", "--n-train", "300"]
    _run([*demo, "--n-eval", "20", "--n-analysis", "8"], work, env, timeout=400)
    report = (work / "q" / "report.html").read_text()
    assert "<img" in report and "pgd_at" in report
    for run in ("standard", "pgd_at"):
        assert (work / "q" / run / "checkpoints" / "best.safetensors").is_file()
