"""Benchmark: the cost per row of the attacks' model passes in float32 and bf16, by batch size.

What ``precision="bf16"`` (robustlab.attacks.precision) can save: for each model (the TRADES
MNIST SmallCNN; a PGD-AT LeNet-5 and a PGD-AT CIFAR-10 CNN given as run directories, as in
bench_eval.py), process CPU microseconds per row of a forward pass (inference mode, Square's
queries and the float32 checks) and of a forward plus input-gradient backward pass (APGD's and
FAB's gradient passes), in float32 NCHW, float32 channels_last and bf16 autocast channels_last,
at batch sizes --batches, measured side by side in one process (interleaved, median of
--repeats). The ratio bf16 / float32 channels_last is what the option saves per pass; below
``MIN_BF16_ROWS`` rows a CPU pass stays float32.

Usage: python bench/bench_precision.py [--batches 1,4,8,32,128] [--repeats 5] [--lenet-run DIR]
       [--cifar-run DIR] [--out FILE]
Writes bench/results/precision.json and prints a table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_eval import REPO, load_models  # noqa: E402
from machine import machine_info, machine_line  # noqa: E402

from robustlab.attacks.precision import MIN_BF16_ROWS  # noqa: E402
from robustlab.io import write_json  # noqa: E402

SETTINGS = (("float32 NCHW", False, False), ("float32 CL", True, False), ("bf16 CL", True, True))


def per_row_us(fn: Callable[[], Any], rows: int, repeats: int) -> float:
    """Median over ``repeats`` of the process CPU microseconds per row of ``fn``."""
    reps = max(3, 512 // rows)
    fn()
    out = []
    for _ in range(repeats):
        t = time.process_time()
        for _ in range(reps):
            fn()
        out.append((time.process_time() - t) / reps / rows * 1e6)
    return statistics.median(out)


def _passes(m: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool) -> tuple:
    """The forward pass (inference mode) and the forward + input-gradient pass."""

    def fwd() -> None:
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            m(x)

    def fwd_bwd() -> None:
        xr = x.clone().requires_grad_(True)
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            logits = m(xr)
        torch.autograd.grad(F.cross_entropy(logits.float(), y), xr)

    return fwd, fwd_bwd


def measure(model: torch.nn.Module, shape: tuple[int, ...], bs: int, repeats: int) -> dict:
    x0 = torch.rand(bs, *shape, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 10, (bs,), generator=torch.Generator().manual_seed(1))
    row: dict[str, Any] = {"batch": bs}
    for name, cl, bf16 in SETTINGS:
        fmt = torch.channels_last if cl else torch.contiguous_format
        m = model.to(memory_format=fmt)
        fwd, fwd_bwd = _passes(m, x0.contiguous(memory_format=fmt), y, bf16)
        row[name] = {
            "forward_us_per_row": round(per_row_us(fwd, bs, repeats), 1),
            "forward_backward_us_per_row": round(per_row_us(fwd_bwd, bs, repeats), 1),
        }
    for kind in ("forward_us_per_row", "forward_backward_us_per_row"):
        row[f"bf16_vs_float32_cl_{kind.split('_us')[0]}"] = round(
            row["bf16 CL"][kind] / row["float32 CL"][kind], 2
        )
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="trades,lenet,cifar")
    ap.add_argument("--lenet-run", default="runs/mnist-lenet-pgdat")
    ap.add_argument("--cifar-run", default="runs/cifar-pgdat")
    ap.add_argument("--batches", default="1,4,8,32,128")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "precision.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    info = machine_info()
    print(machine_line(info), flush=True)
    result: dict[str, Any] = {"benchmark": "precision", "machine": info, "models": []}
    result["min_bf16_rows"] = MIN_BF16_ROWS
    lines = ["| model | batch | forward: float32 NCHW / CL / bf16 CL (us per row) | bf16 / CL "
             "| forward+backward: NCHW / CL / bf16 | bf16 / CL |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for label, model, dataset, _eps in load_models(args):
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        shape = (1, 28, 28) if dataset == "mnist" else (3, 32, 32)
        rows = [measure(model, shape, int(b), args.repeats) for b in args.batches.split(",")]
        result["models"].append({"model": label, "rows": rows})
        for r in rows:
            f = " / ".join(f"{r[s]['forward_us_per_row']:.0f}" for s, _, _ in SETTINGS)
            fb = " / ".join(f"{r[s]['forward_backward_us_per_row']:.0f}" for s, _, _ in SETTINGS)
            lines.append(f"| {label.split(' (')[0]} | {r['batch']} | {f} | "
                         f"{r['bf16_vs_float32_cl_forward']:.2f} | {fb} | "
                         f"{r['bf16_vs_float32_cl_forward_backward']:.2f} |")  # fmt: skip
        write_json(args.out, result)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
