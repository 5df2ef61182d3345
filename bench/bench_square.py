"""Benchmark: Square's per-query cost, the current loop against the reference formulation of
its loop (``tests/square_reference.py``, robustlab before the vectorised rewrite), side by side
in one process, interleaved, same seed: the adversarial examples and query counts must be
identical (checked), and the CPU seconds per query are compared.

Per model (the TRADES MNIST SmallCNN; the trained run directories given by --run) Square
(Linf, AutoAttack's raw-iteration schedule) attacks --n test images from --start with
--queries queries, --repeats times; the inputs are taken from test images 1000 onwards by
default (not the bench_eval images). Process CPU seconds, one thread.

Usage: python bench/bench_square.py [--n 10] [--queries 1000] [--repeats 3]
       [--run DIR]... [--norm linf|l2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from machine import machine_info, machine_line  # noqa: E402
from square_reference import ReferenceSquare  # noqa: E402

from robustlab.attacks.square import Square  # noqa: E402
from robustlab.data import load_split  # noqa: E402
from robustlab.io import write_json  # noqa: E402
from robustlab.models import create_model, load_checkpoint  # noqa: E402

SHARED = Path(os.environ.get("ROBUSTLAB_SHARED", HERE.parents[1] / "shared"))


def _models(args: argparse.Namespace) -> list[tuple[str, nn.Module, str, float, float]]:
    m = create_model("smallcnn", dataset="mnist")
    load_checkpoint(m, SHARED / "models" / "trades_mnist_smallcnn.pt")
    out = [("TRADES SmallCNN (MNIST)", m.eval(), "mnist", 0.3, 3.0)]
    from robustlab.attacks import parse_eps
    from robustlab.train.checkpoint import load_run_model

    for run in args.run:
        rm, cfg = load_run_model(run, which="last")
        eps = parse_eps(str(cfg.objective.params.get("eps", "0.3")))  # the training eps
        label = f"{cfg.model.name} ({cfg.data.dataset}, {run})"
        out.append((label, rm.eval(), cfg.data.dataset, eps, 10 * eps))
    return out


def load_test_images(dataset: str, data_dir: str, start: int, n: int) -> tuple[torch.Tensor, ...]:
    """Test images ``start .. start + n`` of ``dataset`` in [0, 1], channels_last (as
    ``robust_evaluate`` runs them), and their labels."""
    sp = load_split(dataset, "test", root=data_dir)
    sl = slice(start, start + n)
    x, y = sp.images[sl].float() / 255.0, sp.labels[sl].long()
    return x.contiguous(memory_format=torch.channels_last), y


class _OpCounter(TorchDispatchMode):
    """Counts the aten operators Square dispatches outside the model's forward passes (on a
    GPU each is at least one kernel launch): the attack's own per-query work."""

    def __init__(self) -> None:
        super().__init__()
        self.ops, self.in_model = 0, False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        if not self.in_model:
            self.ops += 1
        return func(*args, **(kwargs or {}))


class _Flagged(nn.Module):
    def __init__(self, model: nn.Module, counter: _OpCounter) -> None:
        super().__init__()
        self.model, self.counter = model, counter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.counter.in_model = True
        try:
            return self.model(x)
        finally:
            self.counter.in_model = False


def ops_per_query(cls: type, kw: dict, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Operators dispatched by the attack itself per query batch (model forwards excluded)."""
    counter = _OpCounter()
    with counter:
        atk = cls(**kw)
        atk(_Flagged(model, counter).eval(), x, y)
    return round(counter.ops / kw["n_queries"], 1)


def _time(attack: Square, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple:
    c0 = time.process_time()
    adv = attack(model, x, y)
    return time.process_time() - c0, adv, attack.queries


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--start", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--norm", default="linf", choices=["linf", "l2"])
    ap.add_argument("--run", action="append", default=[], help="a trained run directory")
    ap.add_argument("--data-dir", default=str(SHARED / "data"))
    ap.add_argument("--out", default=str(HERE / "results" / "square.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    info = machine_info()
    print(machine_line(info), flush=True)
    result: dict[str, Any] = {"benchmark": "square", "args": vars(args), "machine": info}
    result["models"] = []
    for label, model, dataset, eps_inf, eps_l2 in _models(args):
        x, y = load_test_images(dataset, args.data_dir, args.start, args.n)
        model = model.to(memory_format=torch.channels_last)
        eps = eps_inf if args.norm == "linf" else eps_l2
        kw = {"eps": eps, "norm": args.norm, "n_queries": args.queries, "seed": 0}
        kw["rescale_schedule"] = False
        cpu: dict[str, list[float]] = {"reference": [], "current": []}
        identical, q_total = True, 0
        for _ in range(args.repeats):
            t_ref, adv_ref, q_ref = _time(ReferenceSquare(**kw), model, x, y)
            t_new, adv_new, q_new = _time(Square(**kw), model, x, y)
            cpu["reference"].append(round(t_ref, 3))
            cpu["current"].append(round(t_new, 3))
            identical &= torch.equal(adv_ref, adv_new) and torch.equal(q_ref, q_new)
            q_total = int(q_new.sum())
        best = {k: min(v) for k, v in cpu.items()}
        small = {**kw, "n_queries": 200}
        ops = {
            "reference": ops_per_query(ReferenceSquare, small, model, x, y),
            "current": ops_per_query(Square, small, model, x, y),
        }
        entry = {
            "model": label, "eps": eps, "n": args.n, "queries_spent": q_total,
            "cpu_seconds": cpu, "identical": identical,
            "ms_per_query_batch": {k: round(1e3 * v / args.queries, 3) for k, v in best.items()},
            "current_vs_reference": round(best["current"] / best["reference"], 3),
            "attack_ops_per_query_batch_first_200": ops,
        }  # fmt: skip
        result["models"].append(entry)
        print(f"  {label}: reference {best['reference']:.2f} CPU-s, current "
              f"{best['current']:.2f} CPU-s ({entry['current_vs_reference']}x), "
              f"identical {identical}; attack ops per query {ops}", flush=True)  # fmt: skip
    result["load_average_end"] = os.getloadavg()
    write_json(args.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
