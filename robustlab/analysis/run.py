"""Run every requested analysis on one model and one sample of data: the pipeline shared by
``robustlab analyze``, the per-epoch training callback and the tests.

:func:`compute_analyses` returns, per analysis, a JSON-ready summary and per-sample arrays;
:func:`analyze_run` applies it to a run directory and writes ``RUN/analysis/summary.json``
(merged with earlier analyses), ``RUN/analysis/<name>.npz`` and ``RUN/analysis/samples.npz``
(the test indices and images analysed, so a report can show them without the dataset).
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from robustlab.analysis.base import (
    AnalysisInputs,
    analysis_names,
    get_analysis,
    parse_analyses,
)
from robustlab.data.convert import to_float
from robustlab.errors import RobustlabError
from robustlab.io import atomic_write_bytes, write_json
from robustlab.train.rundir import RunDir

__all__ = [
    "ANALYSES",
    "parse_analyses",
    "select_samples",
    "compute_analyses",
    "default_eps",
    "analyze_run",
    "find_checkpoint",
    "parse_objective_spec",
    "objective_from_spec",
    "read_analysis",
    "run_objectives",
    "write_analysis",
]

#: The built-in analyses, in the order they run (the registry may hold more:
#: :func:`robustlab.analysis.base.analysis_names`).
ANALYSES = ("logits", "margins", "dynamics", "jacobian", "fisher")

_DEFAULT_EPS = {"mnist": 0.3, "mnist-mini": 0.3, "fashion-mnist": 0.1}


def parse_objective_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"pgd_at:eps=0.3,steps=3"`` -> ``("pgd_at", {"eps": 0.3, "steps": 3})`` (YAML values;
    fractions such as ``8/255`` become floats)."""
    import yaml

    from robustlab.attacks.threat import parse_eps

    name, _, rest = str(spec).partition(":")
    if not name.strip():
        raise RobustlabError(f"objective spec {spec!r} has no name; write NAME[:key=value,...]")
    hp: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RobustlabError(f"objective spec {spec!r}: expected key=value, got {item!r}")
        v: Any = value.strip()
        if "/" in v:
            v = parse_eps(v)
        else:
            try:
                v = yaml.safe_load(v)
            except yaml.YAMLError:
                raise RobustlabError(f"objective spec {spec!r}: cannot read {value!r}") from None
        hp[key.strip()] = v
    return name.strip(), hp


def objective_from_spec(spec: str) -> Any:
    """Build a registered objective from ``NAME[:key=value,...]``."""
    from robustlab.objectives import create_objective

    name, hp = parse_objective_spec(spec)
    return create_objective(name, **hp)


def select_samples(n_total: int, n: int | None, seed: int = 0) -> Tensor:
    """A seeded random subset of ``n`` indices of ``range(n_total)``, sorted (all when None)."""
    if n is None or n >= n_total:
        return torch.arange(n_total)
    if n <= 0:
        raise RobustlabError(f"--n must be positive, got {n}")
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n_total, generator=gen)[:n].sort().values


def default_eps(dataset: str, norm: str = "linf") -> float:
    """The usual training eps of a dataset (Linf: 0.3 MNIST, 0.1 Fashion, 8/255 else; L2: 0.5
    for 32x32 images, 2.0 for MNIST-like)."""
    if norm.lower() in ("l2", "2"):
        return 2.0 if dataset in _DEFAULT_EPS else 0.5
    return _DEFAULT_EPS.get(dataset, 8 / 255)


def _objective_dict(objective: Any) -> dict[str, Any]:
    """``None``, one objective (or name), a list of them, or ``{label: objective}`` -> dict."""
    if objective is None:
        return {}
    if isinstance(objective, dict):
        return dict(objective)
    items = objective if isinstance(objective, (list, tuple)) else [objective]
    out: dict[str, Any] = {}
    for obj in items:
        if isinstance(obj, str):
            from robustlab.objectives import create_objective

            label, obj = obj, create_objective(obj)
        else:
            label = getattr(obj, "name", type(obj).__name__)
        out[label if label not in out else f"{label}_{len(out)}"] = obj
    return out


def _train_batch(batch: Any) -> tuple[Tensor, Tensor, Tensor] | None:
    """``(x, y)`` or ``(x, y, index)`` -> ``(x, y, index)`` (index: the rows' training-set
    indices, ``arange`` when not given)."""
    if batch is None:
        return None
    if len(batch) == 2:
        x, y = batch
        return x, y, torch.arange(x.shape[0], device=x.device)
    x, y, index = batch
    return x, y, index


def compute_analyses(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    what: Sequence[str] | str | None = None,
    *,
    norm: str = "linf",
    eps: float = 0.3,
    seed: int = 0,
    objective: Any = None,
    train_batch: tuple[Tensor, ...] | None = None,
    margin_steps: int = 100,
    jacobian_projections: int = 0,
    kl_group_size: int = 10,
    batch_size: int = 256,
) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """Run the registered analyses ``what`` (default: every default one) on ``(x, y)``;
    returns ``(summaries, arrays)`` keyed by analysis name.

    Analyses run in registry order, each after those it requires (``dynamics`` reuses the
    margins). ``dynamics`` needs ``objective`` (an objective or its registered name, a list of
    them, or ``{label: objective}``: pass the live objective of a run) and ``train_batch``
    ``(x, y, index)`` with the batch's training-set indices (``(x, y)`` means indices
    ``0..n-1``). ``jacobian_projections`` > 0 replaces the exact Frobenius norm by that many
    random projections (for large K).
    """
    names = parse_analyses(what)
    inputs = AnalysisInputs(
        model, x, y, norm=norm, eps=eps, seed=seed, objectives=_objective_dict(objective),
        train_batch=_train_batch(train_batch),
        options={
            "margin_steps": margin_steps, "jacobian_projections": jacobian_projections,
            "kl_group_size": kl_group_size, "batch_size": batch_size,
        },
    )  # fmt: skip
    inputs.threat  # noqa: B018 - an unknown norm or a bad eps fails before any work
    summaries: dict[str, Any] = {}
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for name in names:
        result = get_analysis(name).compute(inputs)
        inputs.results[name] = result
        summaries[name], arrays[name] = result.summary, result.arrays
    return summaries, arrays


def find_checkpoint(run_dir: str | Path) -> Path:
    """The checkpoint a run delivers (``best.pt``, else ``last.pt``); clear error if none."""
    run = RunDir(run_dir)
    if not run.root.is_dir():
        raise RobustlabError(f"run directory not found: {run}")
    if not run.config.is_file():
        raise RobustlabError(f"{run} is not a run directory (no config.yaml)")
    for which in ("best", "last"):
        if run.checkpoint(which).is_file():
            return run.checkpoint(which)
    raise RobustlabError(f"run directory {run} has no checkpoint (checkpoints/best.pt or last.pt)")


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def read_analysis(run_dir: str | Path) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """``(summary, arrays)`` of a run's ``analysis/`` folder (empty when not analysed yet)."""
    run = RunDir(run_dir)
    summary: dict[str, Any] = {}
    if run.analysis_summary.is_file():
        summary = json.loads(run.analysis_summary.read_text(encoding="utf-8"))
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for name in (*analysis_names(), "samples"):
        p = run.analysis_arrays(name)
        if p.is_file():
            with np.load(p) as z:
                arrays[name] = {k: z[k] for k in z.files}
    return summary, arrays


def run_objectives(
    cfg: Any,
    objective: str | Sequence[str] | None,
    model: nn.Module,
    train_split: Any,
    device: str | torch.device,
) -> dict[str, Any]:
    """The objectives whose velocity drives ``dynamics`` for a stored run: the run's own
    (default) or the given specs, each set up on the run's training split (so that a
    ``distill`` run's teacher targets belong to the same training indices as in training)."""
    from robustlab.objectives import create_objective

    if objective is None:
        objs = {cfg.objective.name: create_objective(cfg.objective.name, **cfg.objective.params)}
    else:
        specs = [objective] if isinstance(objective, str) else list(objective)
        objs = {spec: objective_from_spec(spec) for spec in specs}
    for obj in objs.values():
        obj.setup(model, train_split, device)
    return objs


def analyze_run(
    run_dir: str | Path,
    what: str | Sequence[str] | None = None,
    *,
    n: int | None = 1000,
    norm: str = "linf",
    eps: float | None = None,
    data_dir: str | Path | None = None,
    seed: int = 0,
    objective: str | Sequence[str] | None = None,
    margin_steps: int = 100,
    which: str = "best",
    device: str = "cpu",
) -> dict[str, Any]:
    """Analyse one run directory on ``n`` seeded test samples; writes ``RUN/analysis/``.

    The same ``n`` and ``seed`` pick the same test samples in every run, so runs can be
    compared sample by sample. ``eps`` defaults to the dataset's usual training eps;
    ``objective`` (for ``dynamics``): one or more specs ``NAME[:key=value,...]`` (see
    :func:`parse_objective_spec`), default the run's own training objective. The training
    batch for ``dynamics`` is drawn from the run's own training split (``data.n_train``,
    ``data.n_val`` and ``seed`` of its configuration) with its training-set indices.
    Returns the merged summary written to ``RUN/analysis/summary.json``.
    """
    names = parse_analyses(what)
    run = RunDir(run_dir)
    ckpt = find_checkpoint(run)
    from robustlab.data import load_data, load_split
    from robustlab.models import input_normalization
    from robustlab.train import load_run_model

    model, cfg = load_run_model(
        run.root, which="best" if ckpt == run.checkpoint("best") else "last", map_location=device
    )
    dataset, root = cfg.data.dataset, data_dir or cfg.data.data_dir
    eps = default_eps(dataset, norm) if eps is None else float(eps)
    test = load_split(dataset, "test", root=root)
    idx = select_samples(len(test), n, seed)
    x, y = to_float(test.images[idx], device), test.labels[idx].to(device)
    obj, train_batch = None, None
    if "dynamics" in names:
        data = load_data(dataset, root, cfg.data.n_train, cfg.data.n_val, cfg.seed)
        obj = run_objectives(cfg, objective, model, data.train, device)
        tidx = select_samples(len(data.train), min(cfg.data.batch_size, 256), seed + 1)
        train_batch = (
            to_float(data.train.images[tidx], device),
            data.train.labels[tidx].to(device),
            tidx.to(device),
        )
    summaries, arrays = compute_analyses(
        model, x, y, names, norm=norm, eps=eps, seed=seed, objective=obj,
        train_batch=train_batch, margin_steps=margin_steps,
    )  # fmt: skip
    meta = {"dataset": dataset, "n": int(idx.numel()), "seed": seed, "norm": norm, "eps": eps}
    meta["checkpoint"] = ckpt.name
    meta["input_normalization"] = input_normalization(model)
    samples = {
        "index": idx.numpy(),
        "images": test.images[idx].numpy(),
        "labels": test.labels[idx].numpy(),
    }
    return write_analysis(run, summaries, arrays, meta, samples)


def write_analysis(
    run_dir: str | Path | RunDir,
    summaries: dict[str, Any],
    arrays: dict[str, dict[str, np.ndarray]],
    meta: dict[str, Any],
    samples: dict[str, np.ndarray],
) -> dict[str, Any]:
    """Merge ``summaries`` into ``RUN/analysis/summary.json`` and write the arrays; earlier
    results on other samples (another ``n``, ``seed`` or dataset) are dropped."""
    run = RunDir(run_dir)
    previous, _ = read_analysis(run.root)
    old_meta = previous.get("meta", {})
    if any(old_meta.get(k) not in (None, meta[k]) for k in ("n", "seed", "dataset")):
        # Another sample: earlier results are not comparable, so drop them.
        previous = {}
        for name in analysis_names():
            if name not in arrays and run.analysis_arrays(name).is_file():
                run.analysis_arrays(name).unlink()
    merged = {**previous, **summaries, "meta": meta}
    _save_npz(run.analysis_samples, samples)
    for name, arr in arrays.items():
        _save_npz(run.analysis_arrays(name), arr)
    write_json(run.analysis_summary, merged)
    return merged
