"""Benchmark: what bf16 autocast gives the PGD-10 AT step on this CPU and what it costs.

On the TRADES MNIST SmallCNN (../shared/models), batch --batch-size of MNIST training images,
PGD-10 at Linf eps 0.3 (step 0.075, random start), measured side by side in one process:

- speed: time of one PGD-AT step (inner attack + outer loss + backward + SGD) in float32
  NCHW, float32 channels_last and bf16 autocast channels_last (interleaved, median of
  --repeats);
- fidelity of one step: relative difference of the loss and cosine similarity of the
  parameter gradient, bf16 against float32, from the same weights, batch and random start;
- accuracy: two copies fine-tuned for --steps PGD-AT steps (SGD lr 0.01, same batches and
  seeds), one in float32 and one under bf16 autocast, then clean and PGD-20 robust accuracy
  (evaluated in float32) on the first --n-test test images.

Usage: python bench/bench_bf16.py [--steps 30] [--n-test 500] [--repeats 5]
Writes bench/results/bf16.json and prints it.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, machine_line  # noqa: E402

from robustlab.attacks import PGD  # noqa: E402
from robustlab.data import load_split  # noqa: E402
from robustlab.evaluate import robust_evaluate  # noqa: E402
from robustlab.io import write_json  # noqa: E402
from robustlab.models import create_model, load_checkpoint  # noqa: E402
from robustlab.objectives import StepState, create_objective  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ROBUSTLAB_SHARED", REPO.parent / "shared"))
EPS = 0.3


def step(model, obj, opt, x, y, seed: int, bf16: bool) -> torch.Tensor:
    """One PGD-AT training step; returns the loss (the optimizer steps if given)."""
    state = StepState(raw_model=model, epochs=1, generator=torch.Generator().manual_seed(seed))
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss, _ = obj(model, x, y, torch.arange(x.shape[0]), state)
    if opt is not None:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    if opt is not None:
        opt.step()
    return loss.detach().float()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-dir", default=str(SHARED / "data"))
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "bf16.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    info = machine_info()
    print(machine_line(info), flush=True)
    base = create_model("smallcnn", dataset="mnist")
    load_checkpoint(base, SHARED / "models" / "trades_mnist_smallcnn.pt")
    obj = create_objective("pgd_at", eps=EPS, steps=10, step_size=0.075)
    tr = load_split("mnist", "train", root=args.data_dir)
    bs = args.batch_size
    xb, yb = tr.images[:bs].float() / 255.0, tr.labels[:bs].long()
    cl = xb.contiguous(memory_format=torch.channels_last)

    settings = {"fp32_nchw": (False, False), "fp32_channels_last": (True, False),
                "bf16_channels_last": (True, True)}  # fmt: skip
    models = {}
    for k, (use_cl, _) in settings.items():
        m = copy.deepcopy(base)
        models[k] = m.to(memory_format=torch.channels_last) if use_cl else m
    times: dict[str, list[float]] = {k: [] for k in settings}
    for r in range(args.repeats + 1):
        for k, (use_cl, bf16) in settings.items():
            t0 = time.perf_counter()
            step(models[k], obj, None, cl if use_cl else xb, yb, r, bf16)
            if r:  # the first round warms up
                times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}

    # fidelity of one step from the same weights, batch and random start
    grads = {}
    for bf16 in (False, True):
        m = copy.deepcopy(base)
        loss = step(m, obj, None, xb, yb, 123, bf16)
        grads[bf16] = (loss, torch.cat([p.grad.flatten() for p in m.parameters()]))
    g32, g16 = grads[False][1], grads[True][1]
    fidelity = {
        "loss_fp32": float(grads[False][0]),
        "loss_bf16": float(grads[True][0]),
        "loss_relative_difference": float(
            (grads[True][0] - grads[False][0]).abs() / grads[False][0].abs()
        ),  # fmt: skip
        "grad_cosine": float(F.cosine_similarity(g32, g16, dim=0)),
        "grad_relative_l2_difference": float((g16 - g32).norm() / g32.norm()),
    }

    # accuracy after a short PGD-AT fine-tune in each precision
    te = load_split("mnist", "test", root=args.data_dir)
    xt, yt = te.images[: args.n_test], te.labels[: args.n_test]
    acc = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        m = copy.deepcopy(base).to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
        for s in range(args.steps):
            i0 = (1000 + s * bs) % (tr.images.shape[0] - bs)
            x = (tr.images[i0 : i0 + bs].float() / 255.0).contiguous(
                memory_format=torch.channels_last
            )
            step(m, obj, opt, x, tr.labels[i0 : i0 + bs].long(), s, bf16)
        m.eval()
        pgd20 = PGD(eps=EPS, steps=20, step_size=0.01, random_start=True, seed=0)
        r = robust_evaluate(m, xt, yt, pgd20, 250)
        acc[name] = {"clean_accuracy": r.clean_accuracy, "pgd20_accuracy": r.robust_accuracy}
    result = {
        "benchmark": "bf16_autocast_pgd_at_step",
        "machine": info,
        "batch_size": bs,
        "seconds_per_step_median": {k: round(v, 4) for k, v in med.items()},
        "time_vs_fp32_nchw": {k: round(v / med["fp32_nchw"], 3) for k, v in med.items()},
        "one_step_fidelity": fidelity,
        "fine_tune_steps": args.steps,
        "accuracy_after_fine_tune": acc,
        "n_test": args.n_test,
        "load_average_end": os.getloadavg(),
    }
    write_json(args.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
