"""Benchmark: PGD-10 adversarial training cost of robustlab's loop against a minimal
hand-written PyTorch loop of the same algorithm, the share of the machine's matmul FLOP/s that
the training step reaches, and DyART's cost per epoch relative to PGD-AT.

Every figure is **process CPU seconds** (``time.process_time``) per epoch, one thread by default:
on a shared machine wall-clock time measures the other jobs as much as the code (a DyART/PGD-AT
ratio moved from 4.79x to 1.14x between two wall-clock runs). Wall seconds are kept as a
secondary column. On a CPU device, images per CPU second = images / CPU seconds; FLOP/s shares
use the CPU time of the step and of the matmul reference alike. (On CUDA, CPU seconds measure the
host side only; read the wall columns there.)

Both loops train the same model (same initial weights) on the same MNIST images with SGD
(momentum 0.9, weight decay 5e-4), batch 128, PGD-10 at Linf eps 0.3 (step 0.075, random
start), and are timed side by side in one process, interleaved, over whole epochs after one
warm-up epoch. The hand-written loop is the pattern of common reference implementations: a
``DataLoader`` over an in-memory ``TensorDataset``, ``loss.backward()`` inside the attack
(parameter gradients computed and thrown away), ``optimizer.zero_grad()`` and ``loss.item()``
every step. robustlab's epoch is timed around the loop's ``Trainer._train_epoch`` (training steps
only; validation and checkpointing excluded), its second (warm) epoch. FLOPs of one training
step are counted with ``torch.utils.flop_counter.FlopCounterMode``; the matmul reference is a
2048x2048 ``torch.mm``.

Usage: python bench/bench_train.py [--data-dir DIR] [--model smallcnn] [--n-train 640]
       [--batch-size 128] [--repeats 3] [--threads 1] [--device cpu] [--no-dyart]
       [--dyart-only] [--dyart-variants default,no_early_exit,warm]

DyART vs PGD-AT: both fine-tune the TRADES SmallCNN (../shared/models) for the timed epoch;
``default`` is DyART as configured by default, ``no_early_exit`` the same without the boundary
search's early exit (``objective.drop_factor=null``: every point runs all FAB iterations),
``warm`` with ``objective.warm_start=true``. ``--dyart-variants default`` also runs against
robustlab versions that predate those options (for before/after runs of two checkouts).

On a CPU shared with other jobs use --threads 1 (the default): OpenMP threads waiting for busy
cores slow every op down many times; start compared runs together. Writes
bench/results/train.json and prints the machine line, a table and the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from robustlab.config import load_config
from robustlab.data import load_data
from robustlab.io import write_json
from robustlab.objectives import StepState, create_objective
from robustlab.train import build_model, train
from robustlab.train.optim import build_optimizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, machine_line  # noqa: E402

EPS, STEPS = 0.3, 10
STEP_SIZE = 2.5 * EPS / STEPS


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def robustlab_overrides(args: argparse.Namespace, objective: list[str]) -> list[str]:
    return [
        "name=bench",
        "seed=0",
        f"data.dataset={args.dataset}",
        f"data.n_train={args.n_train}",
        f"data.batch_size={args.batch_size}",
        "model.name=" + args.model,
        "optim.name=sgd",
        "optim.lr=0.01",
        "optim.momentum=0.9",
        "optim.weight_decay=5e-4",
        "schedule.name=constant",
        "train.epochs=2",
        "train.progress=false",
        f"train.device={args.device}",
        "validation.every=0",
        *([f"data.data_dir={args.data_dir}"] if args.data_dir else []),
        *objective,
    ]


PGD_AT = ["objective.name=pgd_at", f"objective.eps={EPS}", f"objective.steps={STEPS}"]
PGD_AT += [f"objective.step_size={STEP_SIZE}"]


@contextmanager
def epoch_cpu_seconds() -> Iterator[list[float]]:
    """Process CPU seconds of every training epoch run inside the block (around the loop's
    ``Trainer._train_epoch``: the training steps, no validation or checkpointing)."""
    from robustlab.train.loop import Trainer

    orig = Trainer._train_epoch
    out: list[float] = []

    def timed(self: Trainer) -> None:
        c0 = time.process_time()
        orig(self)
        out.append(time.process_time() - c0)

    Trainer._train_epoch = timed  # type: ignore[method-assign]
    try:
        yield out
    finally:
        Trainer._train_epoch = orig  # type: ignore[method-assign]


def last_epoch(args: argparse.Namespace, extra: list[str], objective: list[str]) -> dict:
    """The epoch record of robustlab's second (warm) epoch, with its process CPU seconds
    (``cpu_s``) and images per CPU second (``images_per_cpu_s``)."""
    cfg = load_config(None, robustlab_overrides(args, objective) + extra)
    with tempfile.TemporaryDirectory() as tmp, epoch_cpu_seconds() as cpu:
        run = train(cfg, run_dir=Path(tmp) / "run")
        recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    rec = [r for r in recs if r["kind"] == "epoch"][-1]
    rec["cpu_s"] = cpu[-1]
    rec["images_per_cpu_s"] = args.n_train // args.batch_size * args.batch_size / cpu[-1]
    return rec


def handwritten_epoch(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    loader: DataLoader,
    device: torch.device,
) -> dict[str, float]:
    """One epoch of PGD-10 AT as commonly written by hand; CPU and wall seconds."""
    n = 0
    total_loss = 0.0
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        model.eval()
        delta = torch.empty_like(x).uniform_(-EPS, EPS)
        delta = ((x + delta).clamp(0, 1) - x).detach()
        for _ in range(STEPS):
            delta.requires_grad_(True)
            loss = F.cross_entropy(model(x + delta), y)
            loss.backward()
            grad = delta.grad.detach()
            delta = (delta + STEP_SIZE * grad.sign()).clamp(-EPS, EPS)
            delta = ((x + delta).clamp(0, 1) - x).detach()
        model.train()
        opt.zero_grad()
        loss = F.cross_entropy(model(x + delta), y)
        loss.backward()
        opt.step()
        total_loss += loss.item()
        n += x.shape[0]
    _sync(device)
    return {"cpu_s": time.process_time() - c0, "time_s": time.perf_counter() - t0}


def make_handwritten(args: argparse.Namespace, device: torch.device) -> tuple[Any, Any, Any]:
    cfg = load_config(None, robustlab_overrides(args, PGD_AT))
    data = load_data(args.dataset, args.data_dir, n_train=args.n_train, seed=0)
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    ds = TensorDataset(data.train.images.float() / 255.0, data.train.labels)
    loader = DataLoader(ds, batch_size=args.batch_size, shuffle=True, drop_last=True)
    return model, opt, loader


def matmul_flops(
    device: torch.device, n: int = 2048, reps: int = 10, dtype: torch.dtype = torch.float32
) -> float:
    """FLOP/s of a large matrix product in ``dtype`` (best of ``reps``), per process CPU second
    on a CPU device (per wall second on CUDA)."""
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        t0 = clock()
        torch.mm(a, b)
        _sync(device)
        best = min(best, clock() - t0)
    return 2 * n**3 / best


class _GlobalOnly:
    """Stands in for FlopCounterMode's module tracker: every FLOP goes to "Global"."""

    parents = frozenset({"Global"})

    def __enter__(self) -> _GlobalOnly:
        return self

    def __exit__(self, *args: object) -> None:
        return None


def step_flops(args: argparse.Namespace, device: torch.device, objective: list[str]) -> int:
    """FLOPs of one robustlab training step (inner attack, outer loss, backward)."""
    cfg = load_config(None, robustlab_overrides(args, objective))
    torch.manual_seed(0)
    model = build_model(cfg).to(device).train()
    obj = create_objective(cfg.objective.name, **cfg.objective.params)
    data = load_data(args.dataset, args.data_dir, n_train=args.n_train, seed=0)
    obj.setup(model, data.train, device)
    x = data.train.images[: args.batch_size].to(device).float() / 255.0
    y = data.train.labels[: args.batch_size].to(device)
    idx = torch.arange(args.batch_size, device=device)
    state = StepState(raw_model=model, epochs=2, generator=torch.Generator(device).manual_seed(0))
    opt = build_optimizer(model, cfg.optim, device)
    counter = FlopCounterMode(display=False)
    # Count globally only: the per-module tracker's backward hooks do not support the
    # torch.autograd.grad calls of the inner attack.
    counter.mod_tracker = _GlobalOnly()  # type: ignore[assignment]
    with counter:
        loss, _ = obj(model, x, y, idx, state)
        loss.backward()
        opt.step()
    return int(counter.get_total_flops())


def step_profile(args: argparse.Namespace, device: torch.device, objective: list[str],
                 amp: bool) -> list[dict[str, Any]]:  # fmt: skip
    """Where one training step's time goes: the top operators by self CPU time (2 steps)."""
    from torch.profiler import ProfilerActivity, profile

    cfg = load_config(None, robustlab_overrides(args, objective))
    torch.manual_seed(0)
    model = build_model(cfg).to(device).train().to(memory_format=torch.channels_last)
    obj = create_objective(cfg.objective.name, **cfg.objective.params)
    data = load_data(args.dataset, args.data_dir, n_train=args.n_train, seed=0)
    x = data.train.images[: args.batch_size].to(device).float() / 255.0
    x = x.contiguous(memory_format=torch.channels_last)
    y = data.train.labels[: args.batch_size].to(device)
    idx = torch.arange(args.batch_size, device=device)
    state = StepState(raw_model=model, epochs=2, generator=torch.Generator(device).manual_seed(0))
    opt = build_optimizer(model, cfg.optim, device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss, _ = obj(model, x, y, idx, state)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(2):
            step()
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows) or 1
    return [{"op": e.key, "share": round(e.self_cpu_time_total / total, 3),
             "calls": e.count} for e in rows[:10]]  # fmt: skip


DYART_VARIANTS = {
    "default": [],
    "no_early_exit": ["objective.drop_factor=null"],
    "warm": ["objective.warm_start=true"],
}
RECORD_KEYS = ("train_loss", "train_correct", "train_found", "train_kept", "train_mean_R",
               "train_margin_term")  # fmt: skip


def _cpu_wall(recs: list[dict]) -> dict[str, float]:
    """Median CPU and wall seconds per epoch of some epoch records."""
    return {
        "cpu_s": round(statistics.median(r["cpu_s"] for r in recs), 3),
        "time_s": round(statistics.median(r["time_s"] for r in recs), 3),
    }


def dyart_part(args: argparse.Namespace, result: dict[str, Any], best: list[str]) -> None:
    """DyART variants against PGD-AT, interleaved, in CPU seconds per (second) epoch."""
    # DyART runs FAB on correctly classified points only, so its cost depends on the
    # model's accuracy: both objectives fine-tune the accurate TRADES SmallCNN when it is
    # available (else one natural burn-in epoch precedes the timed epoch).
    weights = Path(args.data_dir or ".").parent / "models" / "trades_mnist_smallcnn.pt"
    if args.model == "smallcnn" and weights.is_file():
        extra = [*best, f"model.weights={weights}"]
        dyart = ["objective.name=dyart", f"objective.eps={EPS}", "objective.burn_in=0"]
        start = "trades_mnist_smallcnn.pt"
    else:
        extra = list(best)
        dyart = ["objective.name=dyart", f"objective.eps={EPS}", "objective.burn_in=1"]
        start = "one natural burn-in epoch"
    names = [v for v in args.dyart_variants.split(",") if v]
    recs: dict[str, list[dict]] = {k: [] for k in ["pgd_at", *names]}
    for _ in range(args.repeats):
        recs["pgd_at"].append(last_epoch(args, extra, PGD_AT))
        for name in names:
            recs[name].append(last_epoch(args, extra, [*dyart, *DYART_VARIANTS[name]]))
    per = {k: _cpu_wall(v) for k, v in recs.items()}
    result["dyart"] = {
        "start": start,
        "per_epoch": per,
        "cpu_s_all": {k: [round(r["cpu_s"], 3) for r in v] for k, v in recs.items()},
        "cpu_vs_pgd_at": {k: round(per[k]["cpu_s"] / per["pgd_at"]["cpu_s"], 3) for k in names},
        "wall_vs_pgd_at": {k: round(per[k]["time_s"] / per["pgd_at"]["time_s"], 3) for k in names},
        "second_epoch_records": {
            k: {f: v[-1][f] for f in RECORD_KEYS if f in v[-1]} for k, v in recs.items()
        },
        "note": "CPU seconds of the 2nd epoch (median over repeats); records of the last repeat",
    }
    print(f"DyART vs PGD-AT ({start}, {args.n_train} images, batch {args.batch_size}, eps {EPS})")
    head = ("variant", "CPU s/epoch", "vs PGD-AT", "wall s", "kept", "mean_R")
    print(f"{head[0]:<16}{head[1]:>12}{head[2]:>11}{head[3]:>9}{head[4]:>8}{head[5]:>9}")
    for k in recs:
        rec, ratio = recs[k][-1], per[k]["cpu_s"] / per["pgd_at"]["cpu_s"]
        kept, r = rec.get("train_kept", float("nan")), rec.get("train_mean_R", float("nan"))
        print(f"{k:<16}{per[k]['cpu_s']:>12.2f}{ratio:>10.2f}x{per[k]['time_s']:>9.1f}"
              f"{kept:>8.4f}{r:>9.4f}")  # fmt: skip


def at_step_part(args: argparse.Namespace, device: torch.device, variants: dict) -> dict:
    """PGD-10 AT: the hand-written loop and robustlab's variants, interleaved; FLOP/s shares."""
    hand: list[dict[str, float]] = []
    recs: dict[str, list[dict]] = {k: [] for k in variants}
    model, opt, loader = make_handwritten(args, device)
    handwritten_epoch(model, opt, loader, device)  # warm-up epoch
    for _ in range(args.repeats):
        hand.append(handwritten_epoch(model, opt, loader, device))
        for name, extra in variants.items():
            recs[name].append(last_epoch(args, extra, PGD_AT))
    per = {k: _cpu_wall(v) for k, v in recs.items()}
    per["handwritten"] = _cpu_wall(hand)
    best_name = min((k for k in variants if "bf16" not in k), key=lambda k: per[k]["cpu_s"])
    mm, mm16 = matmul_flops(device), matmul_flops(device, dtype=torch.bfloat16)
    flops = step_flops(args, device, PGD_AT)
    steps = args.n_train // args.batch_size
    achieved = {k: flops * steps / per[k]["cpu_s"] for k in variants}
    images = steps * args.batch_size
    print(f"PGD-10 AT epoch ({args.model}, {images} images, batch {args.batch_size}); "
          f"matmul fp32 {mm / 1e9:.1f}, bf16 {mm16 / 1e9:.1f} GFLOP per CPU s")  # fmt: skip
    print(f"{'variant':<16}{'CPU s/epoch':>12}{'img/CPU s':>11}{'vs hand':>9}{'wall s':>9}"
          f"{'share fp32 mm':>15}")  # fmt: skip
    for k in [*variants, "handwritten"]:
        c = per[k]["cpu_s"]
        share = f"{achieved[k] / mm:.3f}" if k in achieved else "-"
        print(f"{k:<16}{c:>12.2f}{images / c:>11.1f}{per['handwritten']['cpu_s'] / c:>8.2f}x"
              f"{per[k]['time_s']:>9.1f}{share:>15}")  # fmt: skip
    return {
        "per_epoch": per,
        "cpu_s_all": {k: [round(r["cpu_s"], 3) for r in v] for k, v in recs.items()}
        | {"handwritten": [round(r["cpu_s"], 3) for r in hand]},
        "images_per_cpu_s": {k: round(images / v["cpu_s"], 2) for k, v in per.items()},
        "speedup_vs_handwritten": {
            k: round(per["handwritten"]["cpu_s"] / per[k]["cpu_s"], 3) for k in variants
        },
        "best_variant": best_name,
        "step_flops": flops,
        "matmul_flops_per_cpu_s": mm,
        "matmul_bf16_flops_per_cpu_s": mm16,
        "share_of_matmul_flops": round(achieved[best_name] / mm, 4),
        "share_of_matmul_flops_by_variant": {k: round(v / mm, 4) for k, v in achieved.items()},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--model", default="smallcnn")
    p.add_argument("--n-train", type=int, default=640)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-dyart", action="store_true")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--dyart-only", action="store_true", help="only DyART vs PGD-AT")
    p.add_argument("--dyart-variants", default="default,no_early_exit,warm",
                   help=f"comma-separated, of {', '.join(DYART_VARIANTS)}")  # fmt: skip
    p.add_argument("--out", default="bench/results/train.json")
    args = p.parse_args()
    if args.data_dir is None:
        shared = Path(__file__).resolve().parents[1].parent / "shared" / "data"
        args.data_dir = str(shared) if shared.is_dir() else None
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(machine_line(machine_info(device)), flush=True)
    result: dict[str, Any] = {
        "benchmark": "pgd10_adversarial_training",
        "clock": "process CPU seconds per epoch (time.process_time); wall seconds secondary",
        "model": args.model,
        "dataset": args.dataset,
        "n_train": args.n_train,
        "batch_size": args.batch_size,
        "eps": EPS,
        "steps": STEPS,
        "device": str(device),
        "threads": args.threads,
        "repeats": args.repeats,
        "machine": machine_info(device),
        "machine_line": machine_line(machine_info(device)),
    }
    # robustlab's defaults (channels_last on) and the same loop in NCHW memory format.
    variants = {
        "robustlab": [],
        "robustlab_nchw": ["train.channels_last=false"],
        "robustlab_bf16": ["train.amp=bf16"],
    }
    best: list[str] = []
    if not args.dyart_only:
        result["at_step"] = at_step_part(args, device, variants)
        best = variants[result["at_step"]["best_variant"]]
        if not args.no_profile:
            result["step_profile_fp32"] = step_profile(args, device, PGD_AT, amp=False)
            result["step_profile_bf16"] = step_profile(args, device, PGD_AT, amp=True)
    if not args.no_dyart:
        dyart_part(args, result, best)
    result["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
