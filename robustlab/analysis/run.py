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
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from robustlab.analysis._util import model_device
from robustlab.analysis.dynamics import boundary_speed, conflicting_dynamics, objective_velocity
from robustlab.analysis.fisher import cross_class_kl, fisher_summary
from robustlab.analysis.jacobian import (
    jacobian_frobenius,
    jacobian_frobenius_projected,
    jacobian_spectral_norm,
)
from robustlab.analysis.logits import logit_statistics, summarize
from robustlab.attacks.threat import make_threat
from robustlab.errors import RobustlabError
from robustlab.io import atomic_write_bytes, write_json

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
]

#: Every analysis name, in the order they run.
ANALYSES = ("logits", "margins", "dynamics", "jacobian", "fisher")

_DEFAULT_EPS = {"mnist": 0.3, "mnist-mini": 0.3, "fashion-mnist": 0.1}


def parse_analyses(what: str | Iterable[str] | None) -> list[str]:
    """``"logits,fisher"`` or a list -> validated names in canonical order; None -> all."""
    if what is None:
        return list(ANALYSES)
    names = [w.strip().lower() for w in (what.split(",") if isinstance(what, str) else what)]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in ANALYSES]
    if unknown:
        raise RobustlabError(f"unknown analysis {unknown[0]!r}; choose from {', '.join(ANALYSES)}")
    if not names:
        raise RobustlabError(f"no analysis named; choose from {', '.join(ANALYSES)}")
    return [a for a in ANALYSES if a in names]


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


def _stats(v: np.ndarray, seed: int) -> dict[str, float]:
    return summarize({"v": v[np.isfinite(v)]}, n_boot=500, seed=seed)["v"]


def _margins(
    model: nn.Module, x: Tensor, y: Tensor, norm: str, eps: float, seed: int, steps: int
) -> dict[str, Tensor]:
    from robustlab.analysis.margins import minimum_margins

    return minimum_margins(model, x, y, norm=norm, steps=steps, seed=seed, eps_hint=eps)


def _objective_dict(objective: Any) -> dict[str, Any]:
    """``None``, one objective (or name), a list of them, or ``{label: objective}`` -> dict."""
    if objective is None:
        return {}
    if isinstance(objective, dict):
        return dict(objective)
    items = objective if isinstance(objective, (list, tuple)) else [objective]
    out: dict[str, Any] = {}
    for obj in items:
        label = obj if isinstance(obj, str) else getattr(obj, "name", type(obj).__name__)
        out[label if label not in out else f"{label}_{len(out)}"] = obj
    return out


def _speeds(
    model: nn.Module,
    objective: Any,
    margins: dict[str, Tensor],
    x: Tensor,
    y: Tensor,
    ok: Tensor,
    train_batch: tuple[Tensor, Tensor],
    threat: Any,
    seed: int,
) -> tuple[Tensor, Tensor]:
    """Closed-form (and box-aware) speeds of the verified points under one objective."""
    xt, yt = train_batch
    velocity = objective_velocity(model, objective, xt, yt, seed=seed)
    speed = torch.full((x.shape[0],), math.nan, dtype=torch.float64)
    speed_box = speed.clone()
    if ok.numel():
        dev = model_device(model)
        okd = ok.to(x.device)
        res = boundary_speed(
            model, margins["x_hat"][ok].to(dev), y[okd].to(dev), velocity, threat,
            x=x[okd].to(dev),
        )  # fmt: skip
        speed[ok] = res["speed"].double().cpu()
        if "speed_box" in res:
            speed_box[ok] = res["speed_box"].double().cpu()
    return speed, speed_box


def compute_analyses(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    what: Sequence[str] = ANALYSES,
    *,
    norm: str = "linf",
    eps: float = 0.3,
    seed: int = 0,
    objective: Any = None,
    train_batch: tuple[Tensor, Tensor] | None = None,
    margin_steps: int = 100,
    jacobian_projections: int = 0,
    kl_group_size: int = 10,
    batch_size: int = 256,
) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """Run the analyses ``what`` on ``(x, y)``; returns ``(summaries, arrays)`` keyed by name.

    ``dynamics`` needs ``objective`` (an objective or its registered name, a list of them, or
    ``{label: objective}``) and a training batch ``train_batch`` giving each parameter
    velocity ``-grad L``; it reuses the margins (computed if not requested).
    ``jacobian_projections`` > 0 replaces the exact Frobenius norm by that many random
    projections (for large K).
    """
    what = parse_analyses(list(what))
    threat = make_threat(norm, eps)
    summaries: dict[str, Any] = {}
    arrays: dict[str, dict[str, np.ndarray]] = {}
    if "logits" in what:
        s = logit_statistics(model, x, y, batch_size=batch_size)
        arrays["logits"] = s
        summaries["logits"] = summarize(s, n_boot=1000, seed=seed)
    margins: dict[str, Tensor] | None = None
    if "margins" in what or "dynamics" in what:
        margins = _margins(model, x, y, norm, eps, seed, margin_steps)
        r = margins["margin"].double().numpy()
        ok = margins["verified"].numpy() & margins["correct"].numpy()
        arrays["margins"] = {
            "margin": r,
            "verified": margins["verified"].numpy(),
            "correct": margins["correct"].numpy(),
        }
        rr = np.where(ok, r, np.nan)
        summaries["margins"] = {
            "norm": threat.name,
            "eps": eps,
            **{f"margin_{k}": v for k, v in _stats(rr, seed).items()},
            "median_margin": float(np.nanmedian(rr)) if ok.any() else math.nan,
            "frac_verified": float(margins["verified"].double().mean()),
            "frac_correct": float(margins["correct"].double().mean()),
            # A verified margin below eps certifies an adversarial example inside the ball.
            "frac_margin_below_eps": float(
                np.mean(np.where(margins["correct"].numpy(), r < eps, True))
            ),
        }
    if "dynamics" in what:
        assert margins is not None
        objectives = _objective_dict(objective)
        if not objectives or train_batch is None:
            raise RobustlabError("dynamics needs a training objective and a training batch")
        ok = (margins["verified"] & margins["correct"]).nonzero().squeeze(1)
        r = margins["margin"].double().numpy()
        dyn_arrays: dict[str, np.ndarray] = {"margin": r}
        per_objective = {}
        for label, obj in objectives.items():
            speed, speed_box = _speeds(model, obj, margins, x, y, ok, train_batch, threat, seed)
            sp = speed.numpy()
            fin = sp[np.isfinite(sp)]
            per_objective[label] = {
                "frac_positive_speed": float(np.mean(fin > 0)) if fin.size else math.nan,
                "frac_negative_speed": float(np.mean(fin < 0)) if fin.size else math.nan,
                "median_abs_speed": float(np.median(np.abs(fin))) if fin.size else math.nan,
                **conflicting_dynamics(np.where(np.isfinite(sp), r, np.nan), sp, eps),
            }
            dyn_arrays[f"speed__{label}"] = sp
            dyn_arrays[f"speed_box__{label}"] = speed_box.numpy()
        arrays["dynamics"] = dyn_arrays
        summaries["dynamics"] = {
            "eps": eps,
            "norm": threat.name,
            "n_points": int(ok.numel()),
            "objectives": per_objective,
        }
    if "jacobian" in what:
        if jacobian_projections > 0:
            fro = jacobian_frobenius_projected(
                model, x, n_proj=jacobian_projections, seed=seed, batch_size=batch_size
            )
        else:
            fro = jacobian_frobenius(model, x, batch_size=batch_size)
        spec = jacobian_spectral_norm(model, x, iters=10, seed=seed, batch_size=batch_size)
        arrays["jacobian"] = {"jacobian_fro": fro.numpy(), "jacobian_spec": spec.numpy()}
        summaries["jacobian"] = {
            "method": f"projected({jacobian_projections})" if jacobian_projections else "exact",
            **{f"fro_{k}": v for k, v in _stats(fro.numpy(), seed).items()},
            **{f"spec_{k}": v for k, v in _stats(spec.numpy(), seed).items()},
        }
    if "fisher" in what:
        f = fisher_summary(model, x, batch_size=min(batch_size, 128))
        kl = cross_class_kl(model, x, y, group_size=min(kl_group_size, x.shape[0]), seed=seed)
        arrays["fisher"] = f
        sm = {name: _stats(v, seed) for name, v in f.items()}
        summaries["fisher"] = {
            **{f"{name}_{k}": v for name, d in sm.items() for k, v in d.items()},
            **kl,
            "kl_metric_over_fisher_fro": kl["kl_metric"] / sm["fisher_fro"]["mean"]
            if sm["fisher_fro"]["mean"] > 0
            else math.nan,
        }
    return summaries, arrays


def find_checkpoint(run_dir: str | Path) -> Path:
    """The checkpoint a run delivers (``best.pt``, else ``last.pt``); clear error if none."""
    run = Path(run_dir)
    if not run.is_dir():
        raise RobustlabError(f"run directory not found: {run}")
    if not (run / "config.yaml").is_file():
        raise RobustlabError(f"{run} is not a run directory (no config.yaml)")
    for name in ("best.pt", "last.pt"):
        if (run / "checkpoints" / name).is_file():
            return run / "checkpoints" / name
    raise RobustlabError(f"run directory {run} has no checkpoint (checkpoints/best.pt or last.pt)")


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def read_analysis(run_dir: str | Path) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """``(summary, arrays)`` of a run's ``analysis/`` folder (empty when not analysed yet)."""
    folder = Path(run_dir) / "analysis"
    summary: dict[str, Any] = {}
    if (folder / "summary.json").is_file():
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for name in (*ANALYSES, "samples"):
        p = folder / f"{name}.npz"
        if p.is_file():
            with np.load(p) as z:
                arrays[name] = {k: z[k] for k in z.files}
    return summary, arrays


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
    :func:`parse_objective_spec`), default the run's own training objective.
    Returns the merged summary written to ``RUN/analysis/summary.json``.
    """
    names = parse_analyses(what)
    run = Path(run_dir)
    ckpt = find_checkpoint(run)
    from robustlab.data import load_split
    from robustlab.models import input_normalization
    from robustlab.train import load_run_model

    model, cfg = load_run_model(
        run, which="best" if ckpt.name == "best.pt" else "last", map_location=device
    )
    dataset = cfg.data.dataset
    eps = default_eps(dataset, norm) if eps is None else float(eps)
    test = load_split(dataset, "test", root=data_dir or cfg.data.data_dir)
    idx = select_samples(len(test), n, seed)
    x = (test.images[idx].float() / 255.0).to(device)
    y = test.labels[idx].to(device)
    obj, train_batch = None, None
    if "dynamics" in names:
        from robustlab.objectives import create_objective

        if objective is None:
            obj: Any = {
                cfg.objective.name: create_objective(
                    cfg.objective.name, **dict(cfg.objective.params)
                )
            }
        else:
            specs = [objective] if isinstance(objective, str) else list(objective)
            obj = {spec: objective_from_spec(spec) for spec in specs}
        train = load_split(dataset, "train", root=data_dir or cfg.data.data_dir)
        tidx = select_samples(len(train), min(cfg.data.batch_size, 256), seed + 1)
        train_batch = (
            (train.images[tidx].float() / 255.0).to(device),
            train.labels[tidx].to(device),
        )
    summaries, arrays = compute_analyses(
        model,
        x,
        y,
        names,
        norm=norm,
        eps=eps,
        seed=seed,
        objective=obj,
        train_batch=train_batch,
        margin_steps=margin_steps,
    )
    folder = run / "analysis"
    previous, _ = read_analysis(run)
    meta = {
        "dataset": dataset,
        "n": int(idx.numel()),
        "seed": seed,
        "norm": norm,
        "eps": eps,
        "checkpoint": ckpt.name,
        "input_normalization": input_normalization(model),
    }
    old_meta = previous.get("meta", {})
    if any(old_meta.get(k) not in (None, meta[k]) for k in ("n", "seed", "dataset")):
        # Another sample: earlier results are not comparable, so drop them.
        previous = {}
        for name in ANALYSES:
            if name not in arrays and (folder / f"{name}.npz").is_file():
                (folder / f"{name}.npz").unlink()
    merged = {**previous, **summaries, "meta": meta}
    _save_npz(
        folder / "samples.npz",
        {
            "index": idx.numpy(),
            "images": test.images[idx].numpy(),
            "labels": test.labels[idx].numpy(),
        },
    )
    for name, arr in arrays.items():
        _save_npz(folder / f"{name}.npz", arr)
    write_json(folder / "summary.json", merged)
    return merged
