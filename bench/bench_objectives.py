"""Benchmark the training objectives: time per training step and passes through the model.

For every CPU recipe (``recipes/cpu/<objective>*.yaml``, its own objective hyperparameters) one
training step (objective call + backward) of LeNet-5 on a batch of real MNIST training images
is timed (median of ``--reps`` after one warm-up) and the images pushed through the model
(forward calls x batch rows) are counted with a forward hook, so the relative cost can be read
both as measured time and as counted work. DyART runs past its burn-in on a model trained here
for one short epoch (so that there are correctly classified points to search from); distill
uses LeNet-5 teachers initialized at random (the cost does not depend on the teacher's
weights; its logits are cached in ``setup``, which is timed apart).

Usage: python -m bench.bench_objectives [--data-dir DIR] [--batch 128] [--reps 5] [--threads 1]
Writes bench/results/objectives.json and prints the same JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys as _sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from robustlab.io import atomic_torch_save, write_json
from robustlab.objectives import StepState, create_objective

_sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, machine_line  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _data(data_dir: str | None, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    from robustlab.data import load_split

    split = load_split("mnist", "train", root=data_dir)
    return split.images[:n].float() / 255.0, split.labels[:n]


def _model(x: torch.Tensor, y: torch.Tensor, steps: int) -> torch.nn.Module:
    from robustlab.models import create_model

    model = create_model("lenet5", dataset="mnist", seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for i in range(steps):  # a few hundred natural steps: most points correctly classified
        b = slice((i * 128) % len(x), (i * 128) % len(x) + 128)
        opt.zero_grad()
        F.cross_entropy(model(x[b]), y[b]).backward()
        opt.step()
    return model


class _Counter:
    """Counts images pushed through the model (forward calls x batch rows)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.images = 0
        model.register_forward_pre_hook(self._hook)

    def _hook(self, _m: torch.nn.Module, args: tuple) -> None:
        self.images += int(args[0].shape[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("ROBUSTLAB_DATA"))
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    print(machine_line(machine_info()), flush=True)
    torch.set_num_threads(args.threads)

    x_all, y_all = _data(args.data_dir, 4096)
    model = _model(x_all, y_all, steps=200)
    x, y = x_all[-args.batch :], y_all[-args.batch :]
    idx = torch.arange(len(x_all) - args.batch, len(x_all))
    counter = _Counter(model)
    tmp = Path(tempfile.mkdtemp(prefix="bench-objectives-"))
    teacher = tmp / "teacher.pt"
    atomic_torch_save(model.state_dict(), teacher)

    results = []
    for path in sorted((REPO / "recipes" / "cpu").glob("*.yaml")):
        hp = dict(yaml.safe_load(path.read_text())["objective"])
        name = hp.pop("name")
        if name == "distill":
            hp.update(teacher=str(teacher), std_teacher=str(teacher))
        if name == "dyart":
            hp["burn_in"] = 0
        hp = {k: (str(v) if isinstance(v, str) else v) for k, v in hp.items()}
        obj = create_objective(name, **hp)
        setup_s = 0.0
        if name == "distill":
            from robustlab.data import DatasetInfo, Split

            info = DatasetInfo("mnist", 10, (1, 28, 28), (0.1307,), (0.3081,), False)
            split = Split((x_all * 255).round().to(torch.uint8), y_all, info)
            t0 = time.perf_counter()
            obj.setup(model, split, "cpu")
            setup_s = time.perf_counter() - t0
        times, images, logs = [], [], {}
        for r in range(args.reps + 1):
            g = torch.Generator().manual_seed(r)
            state = StepState(raw_model=model, epoch=0, step=r, epochs=1, generator=g)
            model.train()
            before = counter.images
            t0 = time.perf_counter()
            loss, logs = obj(model, x, y, idx, state)
            loss.backward()
            dt = time.perf_counter() - t0
            model.zero_grad(set_to_none=True)
            if r:  # the first call is a warm-up
                times.append(dt)
                images.append(counter.images - before)
        results.append(
            {
                "recipe": f"recipes/cpu/{path.name}",
                "objective": name,
                "step_ms": round(1000 * statistics.median(times), 2),
                "images_per_step": statistics.median(images),
                "setup_s": round(setup_s, 3),
                "logs": {k: round(float(v), 4) for k, v in logs.items()},
            }
        )
    base = next(r for r in results if r["recipe"].endswith("/standard.yaml"))
    pgd = next(r for r in results if r["recipe"].endswith("/pgd_at.yaml"))
    for r in results:
        r["time_vs_standard"] = round(r["step_ms"] / base["step_ms"], 2)
        r["time_vs_pgd_at"] = round(r["step_ms"] / pgd["step_ms"], 2)
        r["images_vs_pgd_at"] = round(r["images_per_step"] / pgd["images_per_step"], 2)
    out = {
        "benchmark": "objectives",
        "model": "lenet5 (200 natural SGD steps on 4096 MNIST images)",
        "batch": args.batch,
        "threads": args.threads,
        "reps": args.reps,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_avg": os.getloadavg()[0],
        "note": "images_per_step counts forward rows (backward passes are not counted); "
        "measured on a shared CPU, read the ratios",
        "results": results,
    }
    out["machine_info"] = machine_info()
    write_json(REPO / "bench" / "results" / "objectives.json", out)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
