"""Benchmark: robustlab's attacks against torchattacks and ART on the TRADES MNIST SmallCNN.

Side by side in one process, on the same model object and the same first --n test images:
- PGD-10 Linf (eps 0.3, step 0.075, no random start, batches of --batch-size): robustlab
  (plain; with early stop; with channels_last weights and inputs), torchattacks.PGD and ART's
  ProjectedGradientDescent (PyTorchClassifier). Time (min and median of interleaved repeats),
  robust accuracy and the largest difference to torchattacks' adversarial examples.
- AutoAttack standard (eps 0.3) on the first --aa-n images: robustlab vs torchattacks'
  AutoAttack: time, robust accuracy and robustlab's per-attack breakdown. torchattacks'
  AutoAttack runs its APGD/APGD-T/FAB at its default of 10 iterations, not the reference 100,
  so its components are also timed at the reference settings (torchattacks.MultiAttack).

Usage: python bench/bench_attacks.py [--n 1000] [--aa-n 100] [--repeats 3] [--threads 1]
       [--batch-size 128] [--skip-aa] [--skip-art] [--no-reference] [--data-dir DIR]
       [--checkpoint FILE]
Writes bench/results/attacks.json and prints the same JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys as _sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from robustlab.attacks import PGD, AutoAttack
from robustlab.data import load_split
from robustlab.io import write_json
from robustlab.models import create_model, load_checkpoint

_sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, machine_line  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ROBUSTLAB_SHARED", REPO.parent / "shared"))


def _acc(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _batched(fn: Callable, x: torch.Tensor, y: torch.Tensor, bs: int) -> torch.Tensor:
    return torch.cat([fn(x[s : s + bs], y[s : s + bs]) for s in range(0, len(x), bs)])


def bench_pgd(model, x, y, bs: int, repeats: int, skip_art: bool) -> dict:
    import torchattacks

    eps, alpha, steps = 0.3, 0.075, 10
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    variants: dict[str, Callable[[], torch.Tensor]] = {}
    ours = PGD(eps=eps, steps=steps, step_size=alpha, random_start=False)
    ours_es = PGD(eps=eps, steps=steps, step_size=alpha, random_start=False, early_stop=True)
    variants["robustlab"] = lambda: _batched(lambda a, b: ours(model, a, b), x, y, bs)
    variants["robustlab_early_stop"] = lambda: _batched(lambda a, b: ours_es(model, a, b), x, y, bs)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    variants["robustlab_channels_last"] = lambda: _batched(
        lambda a, b: ours(model_cl, a, b), x_cl, y, bs
    )
    ta = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=False)
    variants["torchattacks"] = lambda: _batched(ta, x, y, bs)
    if not skip_art:
        from art.attacks.evasion import ProjectedGradientDescent
        from art.estimators.classification import PyTorchClassifier

        clf = PyTorchClassifier(
            model=model,
            loss=torch.nn.CrossEntropyLoss(),
            input_shape=tuple(x.shape[1:]),
            nb_classes=10,
            clip_values=(0.0, 1.0),
            device_type="cpu",
        )
        art_pgd = ProjectedGradientDescent(
            clf, norm=np.inf, eps=eps, eps_step=alpha, max_iter=steps, num_random_init=0,
            batch_size=bs, verbose=False,
        )  # fmt: skip
        xn, yn = x.numpy(), y.numpy()
        variants["art"] = lambda: torch.from_numpy(art_pgd.generate(xn, yn))
    times: dict[str, list[float]] = {k: [] for k in variants}
    advs: dict[str, torch.Tensor] = {}
    for _ in range(repeats):  # interleaved, so that machine load hits every variant alike
        for name, fn in variants.items():
            t0 = time.perf_counter()
            advs[name] = fn()
            times[name].append(time.perf_counter() - t0)
    model.eval()
    ref = advs["torchattacks"]
    out = {"eps": eps, "step_size": alpha, "steps": steps, "random_start": False}
    for name in variants:
        out[name] = {
            "seconds_min": round(min(times[name]), 3),
            "seconds_median": round(statistics.median(times[name]), 3),
            "robust_accuracy": _acc(model, advs[name].contiguous(), y),
            "max_abs_diff_vs_torchattacks": float((advs[name] - ref).abs().max()),
        }
    base = out["torchattacks"]["seconds_min"]
    for name in variants:
        out[name]["time_vs_torchattacks"] = round(out[name]["seconds_min"] / base, 3)
    return out


def _ta_reference(model, eps: float):
    """torchattacks' components at the reference settings (100 iterations, 9 targets, 5000
    queries), chained like AutoAttack standard by torchattacks.MultiAttack."""
    import torchattacks as ta

    return ta.MultiAttack(
        [
            ta.APGD(model, norm="Linf", eps=eps, steps=100, n_restarts=1, loss="ce", seed=0),
            ta.APGDT(model, norm="Linf", eps=eps, steps=100, n_restarts=1, n_classes=10, seed=0),
            ta.FAB(model, norm="Linf", eps=eps, steps=100, n_restarts=1, multi_targeted=True,
                   n_classes=10, seed=0),
            ta.Square(model, norm="Linf", eps=eps, n_queries=5000, n_restarts=1, seed=0),
        ]
    )  # fmt: skip


def bench_autoattack(model, x, y, bs: int, reference: bool) -> dict:
    import torchattacks

    eps = 0.3
    t0 = time.perf_counter()
    res = AutoAttack(eps=eps, version="standard", batch_size=bs).run(model, x, y)
    ours_s = time.perf_counter() - t0
    out = {
        "n": int(len(x)),
        "robustlab": {
            "seconds": round(ours_s, 2),
            "clean_accuracy": res.clean_accuracy,
            "robust_accuracy": res.robust_accuracy,
            "per_attack": res.per_attack,
            "skipped": res.skipped,
        },
    }
    peers = {"torchattacks_autoattack": lambda: torchattacks.AutoAttack(
        model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=0
    )}  # fmt: skip
    if reference:
        peers["torchattacks_reference_steps"] = lambda: _ta_reference(model, eps)
    for name, make in peers.items():
        t0 = time.perf_counter()
        adv = _batched(make(), x, y, bs)
        sec = time.perf_counter() - t0
        out[name] = {
            "seconds": round(sec, 2),
            "robust_accuracy": _acc(model, adv, y),
            "robustlab_time_ratio": round(ours_s / sec, 3),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--aa-n", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-aa", action="store_true")
    ap.add_argument("--skip-art", action="store_true")
    ap.add_argument(
        "--no-reference",
        action="store_true",
        help="skip torchattacks' components at the reference iteration counts",
    )
    ap.add_argument("--data-dir", default=str(SHARED / "data"))
    ap.add_argument("--checkpoint", default=str(SHARED / "models" / "trades_mnist_smallcnn.pt"))
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "attacks.json"))
    args = ap.parse_args()
    print(machine_line(machine_info()), flush=True)
    torch.set_num_threads(args.threads)
    model = create_model("smallcnn", dataset="mnist")
    load_checkpoint(model, args.checkpoint)
    model.eval()
    split = load_split("mnist", "test", root=args.data_dir)
    x = split.images[: args.n].float() / 255.0
    y = split.labels[: args.n].long()
    result = {
        "benchmark": "attacks",
        "model": "TRADES SmallCNN (MNIST)",
        "n": args.n,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_start": os.getloadavg()[0],
        "clean_accuracy": _acc(model, x, y),
        "pgd10": bench_pgd(model, x, y, args.batch_size, args.repeats, args.skip_art),
    }
    if not args.skip_aa:
        n = min(args.aa_n, args.n)
        result["autoattack_standard"] = bench_autoattack(
            model, x[:n], y[:n], args.batch_size, not args.no_reference
        )
    result["load_average_end"] = os.getloadavg()[0]
    result["machine_info"] = machine_info()
    write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
