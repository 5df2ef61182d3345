"""Benchmark: Square's two Linf query loops on robust models, side by side on a CPU: strength.

Square's compacting loop (what a CPU runs) and its masked loop (what a GPU runs, there from
whole-step CUDA graphs; ``robustlab.attacks.square_graphs``) draw different random numbers,
so they are compared as attacks: Square alone (AutoAttack's settings: 5,000 queries, p_init
0.8, the raw-iteration schedule) on --n test images from --start (default 1000: images no
benchmark used to choose anything), per model and seed. Reported per run: robust accuracy,
the points one loop broke and the other did not, mean queries, process CPU seconds (one
thread; the masked loop also queries rows that are already done until the next block, so on a
CPU it is not the faster one, and is not used there).

Usage: python bench/square_loops.py [--n 100] [--start 1000] [--seeds 0 1] [--queries 5000]
       [--run DIR]... [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_square import SHARED, _models, load_test_images  # noqa: E402
from machine import machine_info, machine_line  # noqa: E402

from robustlab.attacks.boundary import hard_margin  # noqa: E402
from robustlab.attacks.square import Square  # noqa: E402
from robustlab.io import write_json  # noqa: E402


class MaskedSquare(Square):
    """Square with the masked loop on any device (eagerly on a CPU)."""

    def _whole_steps(self, device: torch.device) -> bool:
        return self.threat.name == "linf"


def run_one(sq: Square, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    t0 = time.process_time()
    adv = sq(model, x, y)
    sec = time.process_time() - t0
    with torch.no_grad():
        robust = hard_margin(model(adv), y) > 0
    assert sq.queries is not None
    return {"robust": robust, "cpu_seconds": round(sec, 2),
            "mean_queries": round(float(sq.queries.float().mean()), 1)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--start", type=int, default=1000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--queries", type=int, default=5000)
    ap.add_argument("--run", action="append", default=[], help="a trained run directory")
    ap.add_argument("--data-dir", default=str(SHARED / "data"))
    ap.add_argument("--out", default=str(HERE / "results" / "square_loops.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    info = machine_info()
    print(machine_line(info), flush=True)
    out: dict[str, Any] = {"benchmark": "square_loops", "machine": info,
                           "n": args.n, "start": args.start, "queries": args.queries,
                           "models": []}  # fmt: skip
    for label, model, dataset, eps, _ in _models(args):
        x, y = load_test_images(dataset, args.data_dir, args.start, args.n)
        model = model.to(memory_format=torch.channels_last)
        rows = []
        for seed in args.seeds:
            kw = {"eps": eps, "n_queries": args.queries, "seed": seed, "rescale_schedule": False}
            res = {name: run_one(cls(**kw), model, x, y)
                   for name, cls in (("compacting", Square), ("masked", MaskedSquare))}  # fmt: skip
            a, b = res["compacting"].pop("robust"), res["masked"].pop("robust")
            flat = {f"{k}_{name}": v for name, r in res.items() for k, v in r.items()}
            row = {"seed": seed, **flat,
                   "robust_compacting": round(float(a.float().mean()), 4),
                   "robust_masked": round(float(b.float().mean()), 4),
                   "broken_only_by_compacting": int((~a & b).sum()),
                   "broken_only_by_masked": int((a & ~b).sum())}  # fmt: skip
            rows.append(row)
            print(label, row, flush=True)
        out["models"].append({"model": label, "eps": eps, "runs": rows})
        write_json(args.out, out)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
