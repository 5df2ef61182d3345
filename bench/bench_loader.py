"""Benchmark: images/second of DeviceLoader against torch.utils.data.DataLoader on the CIFAR-10
training set, both doing random crop (padding 4) + horizontal flip + float conversion.

The DataLoader baseline uses a Dataset over the same in-memory uint8 tensor that augments one
sample at a time (the usual torchvision-style pipeline, without PIL), then moves the batch to
the device. Both are timed side by side in one process over the same number of images.

Usage: python bench/bench_loader.py [--data-dir DIR] [--device cpu|cuda] [--images 20480]
       [--workers 0] [--repeats 3] [--threads N]

On a CPU shared with other jobs, use --threads 1: OpenMP threads that wait for busy cores
slow every batched op down several times, which measures the machine, not the loader.
Writes bench/results/loader.json and prints the same JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys as _sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from robustlab.data import Augment, DeviceLoader, load_split
from robustlab.io import write_json

_sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, machine_line  # noqa: E402


class PerSampleCifar(Dataset):
    """Per-sample crop + flip + float conversion, as a standard Dataset does it."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, pad: int = 4, seed: int = 0):
        self.images, self.labels, self.pad = images, labels, pad
        self.gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i].float().div_(255.0)
        x = F.pad(x, (self.pad,) * 4)
        oy, ox = torch.randint(0, 2 * self.pad + 1, (2,), generator=self.gen).tolist()
        x = x[:, oy : oy + 32, ox : ox + 32]
        if torch.rand((), generator=self.gen) < 0.5:
            x = x.flip(-1)
        return x, self.labels[i]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_device_loader(split, device: torch.device, batch: int, n_images: int) -> float:
    loader = DeviceLoader(
        split, batch, shuffle=True, augment=Augment(4, True), seed=0, device=device
    )
    next(iter(loader))  # warm-up (allocations, kernels)
    _sync(device)
    seen, t0 = 0, time.perf_counter()
    while seen < n_images:
        for x, _, _ in loader:
            seen += x.shape[0]
            if seen >= n_images:
                break
    _sync(device)
    return seen / (time.perf_counter() - t0)


def time_dataloader(split, device: torch.device, batch: int, n_images: int, workers: int) -> float:
    ds = PerSampleCifar(split.images, split.labels)
    loader = DataLoader(
        ds,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(0),
    )
    it = iter(loader)
    next(it)  # warm-up (worker start-up is not counted)
    seen, t0 = 0, time.perf_counter()
    while seen < n_images:
        for x, y in it:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            seen += x.shape[0]
            if seen >= n_images:
                break
        it = iter(loader)
    _sync(device)
    return seen / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="data root holding cifar-10-batches-bin/")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--images", type=int, default=20480, help="images timed per measurement")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many measurements")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "loader.json")
    args = ap.parse_args()
    print(machine_line(machine_info()), flush=True)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    split = load_split("cifar10", "train", args.data_dir)
    dev_rates, dl_rates = [], []
    for _ in range(args.repeats):  # interleaved, so both see the same machine load
        dev_rates.append(time_device_loader(split, device, args.batch_size, args.images))
        dl_rates.append(time_dataloader(split, device, args.batch_size, args.images, args.workers))
    result = {
        "benchmark": "loader",
        "dataset": "cifar10-train",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "batch_size": args.batch_size,
        "images_per_measurement": args.images,
        "dataloader_workers": args.workers,
        "repeats": args.repeats,
        "device_loader_img_per_s": round(max(dev_rates)),
        "dataloader_img_per_s": round(max(dl_rates)),
        "speedup": round(max(dev_rates) / max(dl_rates), 2),
        "all_device_loader": [round(r) for r in dev_rates],
        "all_dataloader": [round(r) for r in dl_rates],
    }
    result["machine_info"] = machine_info()
    write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
