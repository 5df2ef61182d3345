"""Benchmark: the reference AutoAttack, robustlab's AutoAttack standard and the ``fast`` preset,
side by side in one process on the same models and images, with a per-component profile.

Per model (the TRADES MNIST SmallCNN; a PGD-AT LeNet-5 and a PGD-AT CIFAR-10 CNN given as run
directories), on the first --n test images, the three evaluations run one after another in
the order given by --order, repeated --repeats times (interleaved, so machine load hits each
alike). Reported: time, robust accuracy, and the ratios robustlab / reference and
fast / robustlab-standard. The profile of robustlab's AutoAttack standard splits each
component's time into forward passes (with and without autograd), input-gradient backward
passes (``torch.autograd.grad``) and the rest, with the time per point still robust; the
reference's components are timed from its own log and its forward passes by a hook.

Usage: python bench/bench_eval.py [--n 100] [--models trades,lenet,cifar] [--lenet-run DIR]
       [--cifar-run DIR] [--repeats 1] [--threads 1] [--skip-reference] [--out FILE]
       [--order reference,standard,fast,standard-bf16,fast-bf16,fast-sqbf16] [--seed 0]
(``-bf16``: the evaluation with ``precision="bf16"``; ``fast-sqbf16``: ``fast`` with
``square_precision="bf16"``, Square's queries alone in bf16.)
Writes bench/results/eval.json and prints a table and the JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, machine_line  # noqa: E402

from robustlab.attacks import AutoAttack, create_attack, parse_eps  # noqa: E402
from robustlab.data import load_split  # noqa: E402
from robustlab.evaluate import robust_evaluate  # noqa: E402
from robustlab.io import write_json  # noqa: E402
from robustlab.models import create_model, load_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ROBUSTLAB_SHARED", REPO.parent / "shared"))


class Timed(nn.Module):
    """Wraps a model; records (start, seconds, grad enabled, rows) of every forward pass."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls: list[tuple[float, float, bool, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        out = self.model(x)
        self.calls.append((t0, time.perf_counter() - t0, torch.is_grad_enabled(), x.shape[0]))
        return out


@contextlib.contextmanager
def timed_grad(log: list[tuple[float, float]]) -> Iterator[None]:
    """Time every ``torch.autograd.grad`` call (the attacks' input-gradient backward passes)."""
    orig = torch.autograd.grad

    def grad(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        out = orig(*a, **k)
        log.append((t0, time.perf_counter() - t0))
        return out

    torch.autograd.grad = grad  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.autograd.grad = orig  # type: ignore[assignment]


def _window(
    calls: list[tuple[float, ...]], t0: float, t1: float, pick: Callable[[tuple], bool]
) -> tuple[float, int]:
    sel = [c for c in calls if t0 <= c[0] < t1 and pick(c)]
    return sum(c[1] for c in sel), sum(int(c[3]) if len(c) > 3 else 1 for c in sel)


def profile_components(
    start: float, per_attack: list[dict], fwd: list[tuple], bwd: list[tuple]
) -> list[dict]:
    out, t = [], start
    for p in per_attack:
        t1 = t + p["seconds"]
        f_grad, rows_grad = _window(fwd, t, t1, lambda c: c[2])
        f_nograd, rows_nograd = _window(fwd, t, t1, lambda c: not c[2])
        b, n_b = _window(bwd, t, t1, lambda c: True)
        out.append(
            {
                "attack": p["attack"],
                "attacked": p["attacked"],
                "broken": p["broken"],
                "seconds": round(p["seconds"], 2),
                "seconds_per_point_attacked": round(p["seconds"] / max(p["attacked"], 1), 3),
                "forward_with_grad_s": round(f_grad, 2),
                "forward_no_grad_s": round(f_nograd, 2),
                "backward_s": round(b, 2),
                "other_s": round(p["seconds"] - f_grad - f_nograd - b, 2),
                "forward_rows": rows_grad + rows_nograd,
                "backward_calls": n_b,
            }
        )
        t = t1
    return out


def run_robustlab(model: nn.Module, x, y, attack, bs: int, profile: bool) -> dict:
    timed = Timed(model).eval()
    bwd: list[tuple[float, float]] = []
    c0 = time.process_time()
    t0 = time.perf_counter()
    ctx = timed_grad(bwd) if profile else contextlib.nullcontext()
    with ctx:
        res = robust_evaluate(timed if profile else model, x, y, attack, bs, use_channels_last=True)
    out = {
        "seconds": round(time.perf_counter() - t0, 2),
        "cpu_seconds": round(time.process_time() - c0, 2),
        "robust_correct": sum(r["robust_correct"] for r in res.records),
        "robust_mask": "".join("1" if r["robust_correct"] else "0" for r in res.records),
        "robust_accuracy": res.robust_accuracy,
        "clean_accuracy": res.clean_accuracy,
        "per_attack": [
            {k: (round(v, 2) if isinstance(v, float) else v) for k, v in p.items()}
            for p in res.per_attack
        ],
    }
    if profile:
        out["profile"] = profile_components(t0, res.per_attack, timed.calls, bwd)
    return out


_LOG = re.compile(r"robust accuracy after (\S+): ([\d.]+)% \(total time ([\d.]+) s\)")


def run_reference(model: nn.Module, x, y, eps: float, bs: int) -> dict:
    from autoattack import AutoAttack as RefAutoAttack

    timed = Timed(model).eval()
    buf = io.StringIO()
    c0 = time.process_time()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(buf):
        ref = RefAutoAttack(timed, norm="Linf", eps=eps, version="standard", seed=0, device="cpu")
        adv = ref.run_standard_evaluation(x, y, bs=bs)
    sec, cpu = time.perf_counter() - t0, time.process_time() - c0
    with torch.no_grad():
        mask = model(adv).argmax(1) == y
    correct = int(mask.sum())
    acc = correct / len(y)
    comps, prev = [], 0.0
    for name, acc_after, total in _LOG.findall(buf.getvalue()):
        comps.append(
            {
                "attack": name,
                "robust_accuracy_after": float(acc_after) / 100,
                "seconds": round(float(total) - prev, 2),
            }
        )
        prev = float(total)
    fwd = sum(c[1] for c in timed.calls)
    return {"seconds": round(sec, 2), "cpu_seconds": round(cpu, 2), "robust_correct": correct,
            "robust_mask": "".join("1" if v else "0" for v in mask.tolist()),
            "robust_accuracy": acc, "components": comps, "forward_s": round(fwd, 2)}  # fmt: skip


def load_models(args: argparse.Namespace) -> list[tuple[str, nn.Module, str, float]]:
    from robustlab.train.checkpoint import load_run_model

    out = []
    for key in args.models.split(","):
        if key == "trades":
            m = create_model("smallcnn", dataset="mnist")
            load_checkpoint(m, SHARED / "models" / "trades_mnist_smallcnn.pt")
            out.append(("TRADES SmallCNN (MNIST, eps 0.3)", m, "mnist", 0.3))
        elif key in ("lenet", "cifar"):
            run = args.lenet_run if key == "lenet" else args.cifar_run
            if not (Path(run) / "checkpoints" / "last.pt").is_file():
                print(f"skipped {key}: no trained run in {run} (train one, see the notes)")
                continue
            m, cfg = load_run_model(run, which="last")
            eps = parse_eps(str(cfg.objective.params.get("eps", "0.3")))  # the training eps
            label = f"PGD-AT {cfg.model.name} ({cfg.data.dataset}, eps {eps:.4g}; {run})"
            out.append((label, m, cfg.data.dataset, eps))
        else:
            raise SystemExit(f"unknown model {key!r}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--start", type=int, default=0, help="first test image (shards)")
    ap.add_argument("--models", default="trades,lenet,cifar")
    ap.add_argument("--lenet-run", default="runs/mnist-lenet-pgdat")
    ap.add_argument("--cifar-run", default="runs/cifar-pgdat")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="seed of robustlab's attacks")
    ap.add_argument("--order", default="reference,standard,fast")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--tag", default="", help="suffix of robustlab's evaluation names (e.g. "
                    "-before: another checkout's robustlab on PYTHONPATH)")  # fmt: skip
    ap.add_argument("--data-dir", default=str(SHARED / "data"))
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "eval.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    info = machine_info()
    print(machine_line(info), flush=True)
    order = [o for o in args.order.split(",") if not (args.skip_reference and o == "reference")]
    result: dict[str, Any] = {"benchmark": "eval", "n": args.n, "machine": info, "models": []}
    result["seed"] = args.seed
    for label, model, dataset, eps in load_models(args):
        model.eval()
        sp = load_split(dataset, "test", root=args.data_dir)
        sl = slice(args.start, args.start + args.n)
        x, y = sp.images[sl].float() / 255.0, sp.labels[sl].long()
        runs: dict[str, list[dict]] = {k: [] for k in order}
        for rep in range(args.repeats):
            for kind in order:
                if kind == "reference":
                    r = run_reference(model, x, y, eps, args.batch_size)
                else:
                    base, _, prec = kind.partition("-")  # standard-bf16: bf16 passes
                    sq = prec.removeprefix("sq") if prec.startswith("sq") else None
                    prec = "float32" if not prec or sq else prec  # fast-sqbf16: Square's alone
                    atk = (
                        AutoAttack(eps=eps, precision=prec, seed=args.seed)
                        if base == "standard"
                        else create_attack("fast", eps=eps, precision=prec, seed=args.seed,
                                           square_precision=sq)
                    )  # fmt: skip
                    r = run_robustlab(model, x, y, atk, args.batch_size, profile=rep == 0)
                runs[kind].append(r)
                r["robustlab"] = str(Path(sys.modules["robustlab"].__file__).parent)
                print(f"  {label} | {kind}: {r['seconds']} s, robust {r['robust_accuracy']:.3f}",
                      flush=True)  # fmt: skip
        runs = {k if k == "reference" else k + args.tag: v for k, v in runs.items()}
        entry: dict[str, Any] = {"model": label, "eps": eps, "runs": runs}
        entry["images"] = [args.start, args.start + args.n]
        entry["cpu_seconds_min"] = {k: min(r["cpu_seconds"] for r in v) for k, v in runs.items()}
        sec = {k: min(r["seconds"] for r in v) for k, v in runs.items()}
        acc = {k: v[0]["robust_accuracy"] for k, v in runs.items()}
        entry["seconds_min"], entry["robust_accuracy"] = sec, acc
        if {"reference", "standard", "fast"} <= set(sec):
            entry["standard_vs_reference_time"] = round(sec["standard"] / sec["reference"], 3)
            entry["fast_vs_reference_time"] = round(sec["fast"] / sec["reference"], 3)
        if {"standard", "fast"} <= set(sec):
            entry["fast_speedup_vs_standard"] = round(sec["standard"] / sec["fast"], 2)
        result["models"].append(entry)
        write_json(args.out, result)
    result["load_average_end"] = os.getloadavg()
    write_json(args.out, result)
    print(table(result))
    print(json.dumps(result, indent=1))


def table(result: dict) -> str:
    """Markdown table: time and robust accuracy per model and evaluation."""
    lines = [machine_line(result["machine"]), "",
             "| model | n | evaluation | time (s) | robust acc | time vs reference |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for e in result["models"]:
        ref = e["seconds_min"].get("reference")
        for k, s in e["seconds_min"].items():
            ratio = f"{s / ref:.2f}x" if ref else "-"
            lines.append(
                f"| {e['model']} | {result['n']} | {k} | {s:.1f} | "
                f"{e['robust_accuracy'][k]:.3f} | {ratio} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
