"""The evaluation protocol every reproduced model goes through, cached per run directory.

For one model on the first ``n_test`` test images (the same images for every model):
clean accuracy; at each eps the claims need, the per-sample worst case of PGD with the CE
loss and PGD with the margin loss (an :class:`~robustlab.attacks.autoattack.Ensemble`, so the
CE-only number is kept too); AutoAttack (``standard``) at the main eps on the first ``aa_n``
images; the gradient-masking checks on the first ``checks_n``; and the per-sample analyses
the claims need (``logits``: max logit, gap, confidence...; ``jacobian``: logit-Jacobian
Frobenius norm on the first ``jacobian_n``). Results are written to
``RUN/eval/reproduce-<key>.json`` (summary) and ``.npz`` (per-sample arrays); the key hashes
the protocol, so a changed protocol is evaluated afresh and an unchanged one is reused.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from robustlab.errors import RobustlabError
from robustlab.io import atomic_write_bytes, write_json

__all__ = ["Protocol", "evaluate_model", "evaluate_run", "load_eval", "eps_label", "test_data"]


def eps_label(eps: float) -> str:
    """A stable array-name fragment for an eps value (``0.1`` -> ``0.1``, 8/255 -> ``0.031373``)."""
    return f"{eps:.6g}"


@dataclass(frozen=True)
class Protocol:
    """Settings of the evaluation (see the module docstring)."""

    dataset: str
    n_test: int
    eps: tuple[float, ...]
    main_eps: float
    norm: str = "linf"
    pgd_steps: int = 20
    pgd_restarts: int = 1
    aa_n: int = 100
    aa_version: str = "standard"
    checks_n: int = 64
    analyses: tuple[str, ...] = ("logits",)
    jacobian_n: int = 200
    seed: int = 0
    data_dir: str | None = None

    def key(self) -> str:
        blob = json.dumps(asdict(self) | {"data_dir": None}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:10]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def test_data(protocol: Protocol) -> tuple[Tensor, Tensor]:
    """The first ``n_test`` test images (float in [0, 1]) and labels."""
    from robustlab.data import load_split
    from robustlab.data.convert import to_float

    split = load_split(protocol.dataset, "test", protocol.data_dir)
    n = min(protocol.n_test, len(split))
    x = to_float(split.images[:n])
    return x, split.labels[:n].long()


def _worst_case(model: nn.Module, x: Tensor, y: Tensor, eps: float, p: Protocol) -> dict:
    from robustlab.attacks import Ensemble, create_attack

    attacks = [
        (
            f"pgd-{loss}",
            create_attack(
                "pgd",
                eps=eps,
                norm=p.norm,
                steps=p.pgd_steps,
                loss=loss,
                restarts=p.pgd_restarts,
                seed=p.seed,
            ),
        )
        for loss in ("ce", "margin")
    ]
    res = Ensemble(attacks, batch_size=500).run(model, x, y)
    broken = res.broken_by.cpu()
    clean = res.clean_correct.cpu().numpy().astype(np.int8)
    ce_ok = (res.clean_correct.cpu() & (broken != 0)).numpy().astype(np.int8)
    worst = res.robust_correct.cpu().numpy().astype(np.int8)
    return {"clean": clean, "ce": ce_ok, "worst": worst}


def _autoattack(model: nn.Module, x: Tensor, y: Tensor, p: Protocol) -> tuple[dict, np.ndarray]:
    from robustlab.attacks import AutoAttack
    from robustlab.evaluate import robust_evaluate

    atk = AutoAttack(eps=p.main_eps, norm=p.norm, version=p.aa_version, seed=p.seed)
    ev = robust_evaluate(model, x[: p.aa_n], y[: p.aa_n], atk, batch_size=500)
    ok = np.array([r["robust_correct"] for r in ev.records], dtype=np.int8)
    return ev.summary(), ok


def _checks(model: nn.Module, x: Tensor, y: Tensor, p: Protocol) -> list[dict[str, Any]]:
    from robustlab.attacks.checks import run_sanity_checks

    res = run_sanity_checks(
        model,
        x[: p.checks_n],
        y[: p.checks_n],
        p.main_eps,
        p.norm,
        n_points=p.checks_n,
        seed=p.seed,
    )
    return [r.as_dict() for r in res]


def evaluate_model(model: nn.Module, protocol: Protocol) -> tuple[dict[str, Any], dict]:
    """Run the protocol on ``model``; returns ``(summary, per-sample arrays)``."""
    p = protocol
    x, y = test_data(p)
    dev = next(model.parameters()).device  # the data follows the model (a GPU when it is there)
    x, y = x.to(dev), y.to(dev)
    model.eval()
    t0 = time.perf_counter()
    arrays: dict[str, np.ndarray] = {"labels": y.cpu().numpy()}
    summary: dict[str, Any] = {"protocol": p.to_dict(), "n_test": int(x.shape[0])}
    for eps in sorted(set(p.eps) | {p.main_eps}):
        wc = _worst_case(model, x, y, eps, p)
        arrays.setdefault("clean_correct", wc["clean"])
        arrays[f"ce_correct@{eps_label(eps)}"] = wc["ce"]
        arrays[f"robust_correct@{eps_label(eps)}"] = wc["worst"]
    summary["clean_accuracy"] = float(arrays["clean_correct"].mean())
    summary["robust_accuracy"] = {
        eps_label(e): float(arrays[f"robust_correct@{eps_label(e)}"].mean())
        for e in sorted(set(p.eps) | {p.main_eps})
    }
    summary["ce_only_accuracy"] = {
        eps_label(e): float(arrays[f"ce_correct@{eps_label(e)}"].mean())
        for e in sorted(set(p.eps) | {p.main_eps})
    }
    if p.aa_n > 0:
        summary["autoattack"], arrays["aa_correct"] = _autoattack(model, x, y, p)
    if p.checks_n > 0:
        summary["checks"] = _checks(model, x, y, p)
        summary["checks_passed"] = all(c["passed"] for c in summary["checks"])
    if "logits" in p.analyses:
        from robustlab.analysis.logits import logit_statistics

        for k, v in logit_statistics(model, x, y).items():
            arrays[f"logits/{k}"] = v
    if "jacobian" in p.analyses:
        from robustlab.analysis.jacobian import jacobian_frobenius

        arrays["jacobian_frobenius"] = jacobian_frobenius(model, x[: p.jacobian_n]).numpy()
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return summary, arrays


def _paths(out_dir: Path, protocol: Protocol) -> tuple[Path, Path]:
    stem = out_dir / f"reproduce-{protocol.key()}"
    return stem.with_suffix(".json"), stem.with_suffix(".npz")


def load_eval(out_dir: str | Path, protocol: Protocol) -> tuple[dict, dict] | None:
    """The cached evaluation in ``out_dir`` for ``protocol``, or None."""
    js, nz = _paths(Path(out_dir), protocol)
    if not (js.is_file() and nz.is_file()):
        return None
    with np.load(nz, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    return json.loads(js.read_text(encoding="utf-8")), arrays


def eval_device() -> torch.device:
    """Where the reproduction evaluates: the first CUDA device when there is one, else the CPU
    (the gpu and paper scales train on a GPU; their evaluation must not fall back to the CPU)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def evaluate_run(
    run_dir: str | Path, protocol: Protocol, model: nn.Module | None = None
) -> tuple[dict, dict]:
    """Evaluate a run's delivered model (or ``model``, for a third-party one whose results go
    to ``run_dir/eval``), reusing a cached result of the same protocol."""
    from robustlab.train.rundir import RunDir

    out = RunDir(run_dir).eval.root
    cached = load_eval(out, protocol)
    if cached is not None:
        return cached
    if model is None:
        from robustlab.train import load_run_model

        model, _ = load_run_model(run_dir, "best")
    torch.manual_seed(protocol.seed)
    model = model.to(eval_device())
    summary, arrays = evaluate_model(model, protocol)
    js, nz = _paths(out, protocol)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(nz, buf.getvalue())
    write_json(js, summary)  # written last: the evaluation is complete once it exists
    return summary, arrays


def check_protocol(p: Protocol) -> None:
    """Bad settings fail before any work."""
    if p.n_test < 1 or not p.eps or any(e <= 0 for e in p.eps) or p.main_eps <= 0:
        raise RobustlabError(f"bad evaluation protocol: {p}")
