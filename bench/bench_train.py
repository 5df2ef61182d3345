"""Benchmark: PGD-10 adversarial training throughput of robustlab's loop against a minimal
hand-written PyTorch loop of the same algorithm, the share of the machine's matmul FLOP/s that
the training step reaches, and DyART's time per epoch relative to PGD-AT.

Both loops train the same model (same initial weights) on the same MNIST images with SGD
(momentum 0.9, weight decay 5e-4), batch 128, PGD-10 at Linf eps 0.3 (step 0.075, random
start), and are timed side by side in one process, interleaved, over whole epochs after one
warm-up epoch. The hand-written loop is the pattern of common reference implementations: a
``DataLoader`` over an in-memory ``TensorDataset``, ``loss.backward()`` inside the attack
(parameter gradients computed and thrown away), ``optimizer.zero_grad()`` and ``loss.item()``
every step. robustlab's throughput is the ``images_per_s`` of its own epoch record (training
steps only; validation and checkpointing excluded). FLOPs of one training step are counted with
``torch.utils.flop_counter.FlopCounterMode``; the matmul reference is a 2048x2048 ``torch.mm``.

Usage: python bench/bench_train.py [--data-dir DIR] [--model smallcnn] [--n-train 640]
       [--batch-size 128] [--repeats 3] [--threads 1] [--device cpu] [--no-dyart]

DyART vs PGD-AT: both fine-tune the TRADES SmallCNN (../shared/models) for the timed epoch.

On a CPU shared with other jobs use --threads 1 (the default): OpenMP threads waiting for busy
cores slow every op down many times. Writes bench/results/train.json and prints the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
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


def time_robustlab(args: argparse.Namespace, extra: list[str], objective: list[str]) -> float:
    """Images/second of robustlab's second (warm) epoch."""
    cfg = load_config(None, robustlab_overrides(args, objective) + extra)
    with tempfile.TemporaryDirectory() as tmp:
        run = train(cfg, run_dir=Path(tmp) / "run")
        recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in recs if r["kind"] == "epoch"][-1]["images_per_s"]


def last_epoch(args: argparse.Namespace, extra: list[str], objective: list[str]) -> dict:
    """The epoch record of robustlab's second (warm) epoch."""
    cfg = load_config(None, robustlab_overrides(args, objective) + extra)
    with tempfile.TemporaryDirectory() as tmp:
        run = train(cfg, run_dir=Path(tmp) / "run")
        recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in recs if r["kind"] == "epoch"][-1]


def handwritten_epoch(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    loader: DataLoader,
    device: torch.device,
) -> float:
    """One epoch of PGD-10 AT as commonly written by hand; returns images/second."""
    n = 0
    total_loss = 0.0
    _sync(device)
    t0 = time.perf_counter()
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
    return n / (time.perf_counter() - t0)


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
    """Measured FLOP/s of a large matrix product in ``dtype`` (best of ``reps``)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
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


def dyart_part(args: argparse.Namespace, result: dict[str, Any], best: list[str]) -> None:
    """DyART cold (warm_start=false, the code before) and warm against PGD-AT, interleaved."""
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
    cold = [*dyart, "objective.warm_start=false"]
    ips: dict[str, list[float]] = {"pgd_at": [], "dyart_cold": [], "dyart_warm": []}
    margins: dict[str, dict[str, float]] = {}
    for _ in range(args.repeats):
        ips["pgd_at"].append(time_robustlab(args, extra, PGD_AT))
        for name, obj in (
            ("dyart_cold", cold),
            ("dyart_warm", [*dyart, "objective.warm_start=true"]),
        ):
            rec = last_epoch(args, extra, obj)
            ips[name].append(rec["images_per_s"])
            margins[name] = {k: rec[k] for k in ("train_kept", "train_mean_R") if k in rec}
    med_d = {k: statistics.median(v) for k, v in ips.items()}
    result["dyart"] = {
        "start": start,
        "images_per_s": {k: round(v, 2) for k, v in med_d.items()},
        "time_per_epoch_vs_pgd_at": {
            k: round(med_d["pgd_at"] / med_d[k], 3) for k in ("dyart_cold", "dyart_warm")
        },
        "second_epoch_verified_margins": margins,
        "note": "dyart_cold = warm_start=false (the code before); both time the 2nd epoch",
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
    p.add_argument("--out", default="bench/results/train.json")
    args = p.parse_args()
    if args.data_dir is None:
        shared = Path(__file__).resolve().parents[1].parent / "shared" / "data"
        args.data_dir = str(shared) if shared.is_dir() else None
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(machine_line(machine_info(device)), flush=True)

    # robustlab's defaults (channels_last on) and the same loop in NCHW memory format.
    variants = {
        "robustlab": [],
        "robustlab_nchw": ["train.channels_last=false"],
        "robustlab_bf16": ["train.amp=bf16"],
    }
    if args.dyart_only:
        result: dict[str, Any] = {"machine": machine_info(device), "n_train": args.n_train}
        dyart_part(args, result, [])
        write_json(args.out, result)
        print(json.dumps(result, indent=2))
        return
    times: dict[str, list[float]] = {k: [] for k in [*variants, "handwritten"]}
    model, opt, loader = make_handwritten(args, device)
    handwritten_epoch(model, opt, loader, device)  # warm-up epoch
    for _ in range(args.repeats):
        times["handwritten"].append(handwritten_epoch(model, opt, loader, device))
        for name, extra in variants.items():
            times[name].append(time_robustlab(args, extra, PGD_AT))
    med = {k: statistics.median(v) for k, v in times.items()}
    best_name = max((k for k in variants if "bf16" not in k), key=lambda k: med[k])

    mm = matmul_flops(device)
    flops = step_flops(args, device, PGD_AT)
    achieved = flops / args.batch_size * med[best_name]
    result: dict[str, Any] = {
        "benchmark": "pgd10_adversarial_training",
        "model": args.model,
        "dataset": args.dataset,
        "n_train": args.n_train,
        "batch_size": args.batch_size,
        "eps": EPS,
        "steps": STEPS,
        "device": str(device),
        "threads": args.threads,
        "repeats": args.repeats,
        "images_per_s": {k: round(v, 2) for k, v in med.items()},
        "images_per_s_all": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "speedup_vs_handwritten": {k: round(med[k] / med["handwritten"], 3) for k in variants},
        "best_variant": best_name,
        "step_flops": flops,
        "matmul_flops_per_s": mm,
        "matmul_bf16_flops_per_s": matmul_flops(device, dtype=torch.bfloat16),
        "achieved_flops_per_s": achieved,
        "share_of_matmul_flops": round(achieved / mm, 4),
        "share_of_matmul_flops_by_variant": {
            k: round(flops / args.batch_size * med[k] / mm, 4) for k in variants
        },
        "load_average": os.getloadavg(),
        "cpu": platform.processor() or platform.machine(),
        "machine": machine_info(device),
        "torch": torch.__version__,
    }
    if not args.no_profile:
        result["step_profile_fp32"] = step_profile(args, device, PGD_AT, amp=False)
        result["step_profile_bf16"] = step_profile(args, device, PGD_AT, amp=True)
    if not args.no_dyart:
        dyart_part(args, result, variants[best_name])
    write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
