"""Benchmark the analyses: verified margins and boundary speeds per second on a CPU-recipe
model, and the K x K Fisher path against the explicit d x d Fisher (time and agreement).

Model: with ``--run-dir`` the run's delivered model, else LeNet-5 trained here with the
standard CPU recipe shortened to one epoch on 3000 MNIST images (about 20 s). Margins use the
multi-class FAB solver (K-1 backward passes per step); boundary speeds are timed without the
margins they start from (one training-objective gradient, one forward-mode JVP and one input
gradient per batch) and checked against the finite difference after one real SGD step on a
few points (in float64, with a longer solver run, since the margin changes by only lr * speed;
points where another class becomes the closest after the step legitimately differ, so the
median relative error is the number to read). The Fisher comparison runs on MNIST (d = 784)
and on CIFAR-10-sized inputs (d = 3072, the size for which the authors build 3072 x 3072
matrices).

Usage: python -m bench.bench_analysis [--data-dir DIR] [--run-dir RUN] [--n 128]
       [--steps 100] [--threads 1]
Writes bench/results/analysis.json and prints the same JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys as _sys
import tempfile
import time
from pathlib import Path

import torch

from robustlab.analysis.dynamics import (
    boundary_speed,
    finite_difference_speed,
    objective_velocity,
)
from robustlab.analysis.fisher import explicit_fisher, fisher_summary
from robustlab.analysis.margins import minimum_margins
from robustlab.attacks.threat import make_threat
from robustlab.io import write_json

_sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, machine_line  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _model(run_dir: str | None, data_dir: str | None) -> tuple[torch.nn.Module, str]:
    from robustlab.train import load_run_model, train

    if run_dir is None:
        from robustlab.config import load_config

        run_dir = str(Path(tempfile.mkdtemp(prefix="bench-analysis-")) / "standard")
        over = ["data.n_train=3000", "data.n_val=0", "validation.every=0", "train.epochs=1",
                "train.progress=false", "train.log_every=0", "train.device=cpu"]  # fmt: skip
        if data_dir:
            over.append(f"data.data_dir={data_dir}")
        train(load_config(REPO / "recipes" / "cpu" / "standard.yaml", over), run_dir=run_dir)
    model, cfg = load_run_model(run_dir)
    return model, f"{cfg.model.name} ({cfg.objective.name}, {run_dir})"


def _timed(fn, repeats: int = 1):  # noqa: ANN001, ANN202
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best


def _agreement(fd: torch.Tensor, closed: torch.Tensor) -> dict:
    """How well closed-form speeds match finite differences (points where both are finite)."""
    ok = torch.isfinite(fd) & torch.isfinite(closed)
    fd, closed = fd[ok].double(), closed[ok].double()
    rel = (fd - closed).abs() / closed.abs().clamp_min(1e-12)
    return {
        "n": int(ok.sum()),
        "correlation": torch.corrcoef(torch.stack([fd, closed]))[0, 1].item(),
        "median_rel_err": rel.median().item(),
        "frac_within_10pct": (rel < 0.1).double().mean().item(),
        "same_sign": (fd.sign() == closed.sign()).double().mean().item(),
    }


def bench_margins_and_speeds(model, x, y, steps: int, n_fd: int, fd_steps: int) -> dict:  # noqa: ANN001
    """Margins/s, speeds/s, and the closed form against one real SGD step (float64)."""
    from robustlab.objectives import create_objective

    obj = create_objective("standard")
    out = {}
    for norm, eps in (("linf", 0.3), ("l2", 2.0)):
        threat = make_threat(norm, eps)
        r, t_m = _timed(lambda n=norm, e=eps: minimum_margins(model, x, y, norm=n, steps=steps,
                                                               eps_hint=e))  # fmt: skip
        ok = (r["verified"] & r["correct"]).nonzero().squeeze(1)

        def speeds(r=r, ok=ok, threat=threat) -> dict:  # noqa: ANN001
            v = objective_velocity(model, obj, x, y)
            return boundary_speed(model, r["x_hat"][ok], y[ok], v, threat, x=x[ok])

        _, t_s = _timed(speeds, repeats=3)
        out[norm] = {
            "n": int(x.shape[0]),
            "steps": steps,
            "margins_per_s": x.shape[0] / t_m,
            "frac_verified": float(r["verified"].double().mean()),
            "median_margin": float(r["margin"][ok].median()),
            "speeds_per_s": len(ok) / t_s,
            "speed_vs_finite_difference": _finite_difference(
                model, obj, x, y, norm, eps, fd_steps, n_fd
            ),  # fmt: skip
        }
    return out


def _finite_difference(model, obj, x, y, norm: str, eps: float, steps: int, n: int) -> dict:  # noqa: ANN001
    """Closed-form speeds against (R_after - R_before) / lr after one SGD step, in float64 (the
    solver's float32 precision would drown the change), velocity from the same points."""
    m64 = copy.deepcopy(model).double()
    xs, ys = x[:n].double(), y[:n]
    threat = make_threat(norm, eps)

    def margins(m: torch.nn.Module) -> dict:
        return minimum_margins(m, xs, ys, norm=norm, steps=steps, eps_hint=eps)

    def loss_fn(m: torch.nn.Module) -> torch.Tensor:
        return obj(m, xs, ys)[0]

    before = margins(m64)
    ok = before["verified"] & before["correct"]
    res = boundary_speed(m64, before["x_hat"], ys, objective_velocity(m64, obj, xs, ys), threat,
                         x=xs)  # fmt: skip
    out: dict = {"n": int(ok.sum()), "solver_steps": steps}
    for lr in (1e-2, 1e-3):
        fd = finite_difference_speed(m64, loss_fn, lambda m: margins(m)["margin"], lr=lr,
                                     margins_before=before["margin"])  # fmt: skip
        out[f"lr={lr:g}"] = {
            "paper_formula": _agreement(fd[ok], res["speed"][ok]),
            "box_aware": _agreement(fd[ok], res["speed_box"][ok]),
        }
    return out


def bench_fisher(model, x, label: str) -> dict:  # noqa: ANN001
    n, d = x.shape[0], x[0].numel()
    s, t_kk = _timed(lambda: fisher_summary(model, x), repeats=3)
    f, t_dd = _timed(lambda: explicit_fisher(model, x))
    _, t_dd_eig = _timed(lambda: torch.linalg.eigvalsh(f))
    eig = torch.linalg.eigvalsh(f)
    ref = {
        "fisher_fro": torch.linalg.matrix_norm(f).numpy(),
        "fisher_top_eig": eig[:, -1].numpy(),
        "fisher_trace": f.diagonal(dim1=1, dim2=2).sum(1).numpy(),
    }
    agree = {k: float(abs(s[k] - ref[k]).max() / abs(ref[k]).max()) for k in ref}
    return {
        "inputs": label,
        "n": n,
        "d": d,
        "kk_seconds_per_sample": t_kk / n,
        "explicit_seconds_per_sample": (t_dd + t_dd_eig) / n,
        "speedup": (t_dd + t_dd_eig) / t_kk,
        "explicit_bytes_per_sample": d * d * 8,
        "max_rel_diff": agree,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=os.environ.get("ROBUSTLAB_DATA"))
    ap.add_argument("--run-dir", default=None)
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--n-fd", type=int, default=32, help="points for the finite-difference check")
    ap.add_argument("--fd-steps", type=int, default=200, help="solver steps for that check")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    print(machine_line(machine_info()), flush=True)
    torch.set_num_threads(args.threads)
    from robustlab.data import load_split
    from robustlab.models import create_model

    model, desc = _model(args.run_dir, args.data_dir)
    test = load_split("mnist", "test", root=args.data_dir)
    idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[: args.n]
    x, y = test.images[idx].float() / 255, test.labels[idx]
    result = {
        "benchmark": "analysis",
        "model": desc,
        "torch": torch.__version__,
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "margins_and_speeds": bench_margins_and_speeds(
            model, x, y, args.steps, args.n_fd, args.fd_steps
        ),
        "fisher": [bench_fisher(model, x[:16], "MNIST test images")],
    }
    torch.manual_seed(0)
    cnn = create_model("cifar_cnn", dataset="cifar10").eval()
    xc = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    result["fisher"].append(bench_fisher(cnn, xc, "cifar_cnn (random init), 32x32x3 inputs"))
    result["machine_info"] = machine_info()
    write_json(REPO / "bench" / "results" / "analysis.json", result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
