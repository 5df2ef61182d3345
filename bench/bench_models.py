"""Benchmark the model zoo on CPU: forward throughput per architecture, the TRADES checkpoint's
full-MNIST evaluation, and how fast ``cifar_cnn`` trains on CIFAR-10.

Usage: ``python -m bench.bench_models [--data-dir ../shared/data] [--threads 2]
[--train-steps 780]``; writes ``bench/results/models.json`` and prints the same JSON.
"""

from __future__ import annotations

import argparse
import json
import sys as _sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from robustlab.data import Augment, DeviceLoader, load_split
from robustlab.evaluate import clean_accuracy
from robustlab.io import write_json
from robustlab.models import create_model, load_checkpoint

_sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, machine_line  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# (name, dataset, batch size, extra kwargs)
FORWARD = [
    ("smallcnn", "mnist", 256, {}),
    ("lenet5", "mnist", 256, {}),
    ("cifar_cnn", "cifar10", 256, {}),
    ("preact_resnet18", "cifar10", 32, {}),
    ("resnet18", "cifar10", 32, {}),
    ("wrn28_10", "cifar10", 8, {}),
    ("wrn34_10", "cifar10", 8, {}),
]


def _time(fn, reps: int) -> tuple[float, float]:
    """Mean (wall, process CPU) seconds per call after one warm-up call."""
    fn()
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - w0) / reps, (time.process_time() - c0) / reps


def bench_forward() -> list[dict]:
    out = []
    for name, dataset, bs, kw in FORWARD:
        model = create_model(name, dataset=dataset, **kw).eval()
        c, s = model.in_channels, model.input_size
        x = torch.rand(bs, c, s, s)
        with torch.no_grad():
            wall, cpu = _time(lambda m=model, x=x: m(x), reps=3)
        params = sum(p.numel() for p in model.parameters())
        out.append(
            {
                "model": name,
                "params": params,
                "batch": bs,
                "images_per_wall_s": round(bs / wall, 1),
                "images_per_cpu_s": round(bs / cpu, 1),
            }
        )
        print(out[-1], flush=True)
    return out


def bench_trades(data_dir: Path) -> dict:
    model = create_model("smallcnn", dataset="mnist")
    load_checkpoint(model, SHARED / "models" / "trades_mnist_smallcnn.pt")
    test = load_split("mnist", "test", data_dir)
    t0 = time.perf_counter()
    acc = clean_accuracy(model, test.images, test.labels, batch_size=500)
    return {"clean_accuracy": acc, "n": len(test), "seconds": round(time.perf_counter() - t0, 2)}


def bench_cifar_cnn_training(data_dir: Path, steps: int, seed: int = 0) -> dict:
    """Train cifar_cnn for ``steps`` steps of 128 (SGD nesterov, one-cycle LR, crop+flip, label
    smoothing 0.1); report full-test accuracy, wall and process CPU seconds (the CPU time is the
    figure to compare on a shared machine)."""
    torch.manual_seed(seed)
    train = load_split("cifar10", "train", data_dir)
    test = load_split("cifar10", "test", data_dir)
    model = create_model("cifar_cnn", dataset="cifar10", seed=seed)
    loader = DeviceLoader(train, 128, shuffle=True, augment=Augment(), seed=seed, drop_last=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)  # fmt: skip
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=steps,
                                                pct_start=0.25)  # fmt: skip
    model.train()
    step, epoch = 0, 0
    w0, c0 = time.perf_counter(), time.process_time()
    while step < steps:
        loader.set_epoch(epoch)
        for x, y, _ in loader:
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step >= steps:
                break
        epoch += 1
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    acc = clean_accuracy(model, test.images, test.labels, batch_size=500)
    return {
        "steps": steps,
        "batch": 128,
        "epochs": round(steps * 128 / len(train), 2),
        "train_wall_seconds": round(wall, 1),
        "train_cpu_seconds": round(cpu, 1),
        "test_accuracy": acc,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", type=Path, default=SHARED / "data")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-steps", type=int, default=780, help="390 steps of 128 = 1 epoch")
    ap.add_argument("--skip-train", action="store_true")
    args = ap.parse_args()
    print(machine_line(machine_info()), flush=True)
    torch.set_num_threads(args.threads)
    result = {
        "torch": torch.__version__,
        "threads": args.threads,
        "forward_cpu": bench_forward(),
        "trades_mnist_full_test": bench_trades(args.data_dir),
    }
    if not args.skip_train:
        result["cifar_cnn_training"] = bench_cifar_cnn_training(args.data_dir, args.train_steps)
    result["machine_info"] = machine_info()
    write_json(REPO / "bench" / "results" / "models.json", result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
