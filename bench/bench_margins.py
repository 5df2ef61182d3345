"""Benchmark minimum-norm margins (the FAB boundary solver) on the TRADES MNIST SmallCNN.

Measures margins per second for Linf and L2 (untargeted multi-class FAB, K-1 backward passes
per step), the scalar-phi solver (one backward per step, as DyART calls it) and, for
reference, torchattacks' FAB on the same images with the same number of steps; reports the
median margins so speed and quality are read together.

Usage: ``python -m bench.bench_margins [--n 100] [--steps 100] [--threads 2]``; writes
``bench/results/margins.json`` and prints the same JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys as _sys
import time
from pathlib import Path

import torch

from robustlab.attacks.fab import boundary_search
from robustlab.attacks.margins import minimum_norm_margins, robust_accuracy_curve
from robustlab.attacks.threat import make_threat
from robustlab.data import load_split
from robustlab.io import write_json
from robustlab.models import create_model, load_checkpoint

_sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, machine_line  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def _soft_margin(logits: torch.Tensor, y: torch.Tensor, beta: float = 5.0) -> torch.Tensor:
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf"))
    return z_y - torch.logsumexp(beta * other, 1) / beta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(SHARED / "data"))
    ap.add_argument("--checkpoint", default=str(SHARED / "models" / "trades_mnist_smallcnn.pt"))
    ap.add_argument("--n", type=int, default=100, help="test images")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-torchattacks", action="store_true")
    args = ap.parse_args()
    print(machine_line(machine_info()), flush=True)
    torch.set_num_threads(args.threads)

    model = create_model("smallcnn", dataset="mnist")
    load_checkpoint(model, args.checkpoint)
    model.eval()
    split = load_split("mnist", "test", root=args.data_dir)
    x, y = split.images[: args.n].float() / 255, split.labels[: args.n]

    records = []
    for norm in ("linf", "l2"):
        t0 = time.perf_counter()
        res = minimum_norm_margins(model, x, y, norm=norm, steps=args.steps, batch_size=args.n)
        wall = time.perf_counter() - t0
        found = res.margin[res.found & res.correct]
        eps = 0.3 if norm == "linf" else 2.0
        rec = {
            "what": f"minimum_norm_margins {norm}",
            "steps": args.steps,
            "n": args.n,
            "seconds": round(wall, 3),
            "margins_per_second": round(args.n / wall, 3),
            "found_fraction": float(res.found.float().mean()),
            "median_margin": float(found.median()) if found.numel() else math.nan,
            f"robust_acc_upper_bound_at_{eps}": float(robust_accuracy_curve(res.margin, [eps])[0]),
        }
        if not args.no_torchattacks:
            rec.update(_torchattacks_reference(model, x, y, norm, args.steps))
        records.append(rec)

    # DyART's call: scalar soft margin, 20 steps, random start on the Linf sphere of eps/2.
    t0 = time.perf_counter()
    res = boundary_search(
        model, x, y, _soft_margin, make_threat("linf", 0.3), steps=20, random_start=True,
        start_radius=0.15, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    wall = time.perf_counter() - t0
    records.append(
        {
            "what": "boundary_search soft margin (DyART settings) linf",
            "steps": 20,
            "n": args.n,
            "seconds": round(wall, 3),
            "points_per_second": round(args.n / wall, 3),
            "found_fraction": float(res.found.float().mean()),
            "median_distance": float(res.distance[res.found].median()),
        }
    )
    out = {
        "benchmark": "margins",
        "model": "TRADES SmallCNN (MNIST)",
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "torch": torch.__version__,
        "records": records,
    }
    out["machine_info"] = machine_info()
    write_json(REPO / "bench" / "results" / "margins.json", out)
    print(json.dumps(out, indent=2))


def _torchattacks_reference(model, x, y, norm: str, steps: int) -> dict:
    try:
        import torchattacks
    except ImportError:
        return {}
    big = 1.0 if norm == "linf" else 28.0  # no eps limit: minimal perturbations
    atk = torchattacks.FAB(model, norm="Linf" if norm == "linf" else "L2", eps=big, steps=steps)
    t0 = time.perf_counter()
    x_adv = atk(x, y)
    wall = time.perf_counter() - t0
    with torch.no_grad():
        ok = (model(x_adv).argmax(1) != y) & (model(x).argmax(1) == y)
    q = math.inf if norm == "linf" else 2.0
    d = torch.linalg.vector_norm((x_adv - x).flatten(1), ord=q, dim=1)[ok]
    return {
        "torchattacks_seconds": round(wall, 3),
        "torchattacks_found_fraction": float(ok.float().mean()),
        "torchattacks_median_margin": float(d.median()) if d.numel() else math.nan,
    }


if __name__ == "__main__":
    main()
