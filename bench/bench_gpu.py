"""GPU benchmark (one command, at most ~8 minutes on one H100/H200): CIFAR-10 PreActResNet-18.

1. Fast-AT as ``recipes/paper/fast_at.yaml`` sets it from the authors' code (Wong, Rice & Kolter
   2020, ``CIFAR10/train_fgsm.py``): FGSM from a uniform random start, step 10/255, eps 8/255,
   with the model in train mode; 15 epochs of the authors' CyclicLR (linear to 0.2 at half of
   training and back, momentum cycled 0.9 -> 0.8 -> 0.9), weight decay 5e-4 on every
   parameter, batch 128, random crop and flip, the CIFAR-10 mean/std inside the model. The
   recipe's model, objective, optimizer and schedule are built by robustlab's own functions;
   the bench keeps the data on the device, trains on all 50,000 images (no validation split)
   and runs under bf16 autocast with channels_last (the authors: apex O2, fp16). Then PGD-50
   (step 2/255, random start, --pgd-restarts) robust accuracy on the first --n-pgd test images
   (default all 10,000, as the authors; they ran 10 restarts). Wong et al. reached 45%; with
   fewer training batches (--train-batches) expect less: the output says how many images were
   used.
2. One PGD-10 AT epoch (eps 8/255, step 2/255) of the trained model: images/s in float32 NCHW,
   float32 channels_last and bf16 channels_last (a few timed steps each, then the full epoch in
   the fastest setting).
3. Evaluations on the first --n-eval test images: the reference AutoAttack when the
   ``autoattack`` package is installed, robustlab's AutoAttack standard and the ``fast`` preset
   (Square's queries replayed from CUDA graphs, the default, and eagerly), and standard with
   bf16 model passes; time and robust accuracy of each.
4. The model's inference pass at Square's query batch sizes, eager and replayed (ms per pass).

Data: --data-dir holds CIFAR-10's binary batches (data_batch_1.bin ... and test_batch.bin);
--train-batches says how many data_batch_*.bin to use (the script uses the ones present, up to
that number). Every stage checks the remaining --budget-s and is skipped (and reported as
skipped) when it would not fit. Writes --out (JSON) after every stage.

Usage: python bench/bench_gpu.py --data-dir DIR --train-batches 1 --out $OUT/gpu.json
       python bench/bench_gpu.py --device cpu --tiny   (every code path, small, on a CPU)
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, machine_line  # noqa: E402

from robustlab.attacks import PGD, AutoAttack, Square, create_attack  # noqa: E402
from robustlab.attacks.graphs import GraphedForward  # noqa: E402
from robustlab.config import load_config  # noqa: E402
from robustlab.config.load import check_objective  # noqa: E402
from robustlab.data.formats import parse_cifar_binary  # noqa: E402
from robustlab.evaluate import robust_evaluate  # noqa: E402
from robustlab.io import write_json  # noqa: E402
from robustlab.models import input_normalization  # noqa: E402
from robustlab.objectives import StepState, create_objective  # noqa: E402
from robustlab.train import build_model  # noqa: E402
from robustlab.train.optim import build_optimizer, build_scheduler  # noqa: E402

EPS = 8 / 255
REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "paper" / "fast_at.yaml"


def load_cifar(data_dir: Path, train_batches: int, device: torch.device) -> dict[str, Any]:
    files = [data_dir / f"data_batch_{i}.bin" for i in range(1, train_batches + 1)]
    present = [f for f in files if f.is_file()]
    if not present or not (data_dir / "test_batch.bin").is_file():
        raise SystemExit(f"{data_dir}: need data_batch_1.bin and test_batch.bin")
    xs, ys = [], []
    for f in present:
        x, y = parse_cifar_binary(f.read_bytes(), f)
        xs.append(torch.from_numpy(x.copy()))
        ys.append(torch.from_numpy(y))
    xt, yt = parse_cifar_binary((data_dir / "test_batch.bin").read_bytes(), data_dir)
    xt, yt = xt.copy(), yt.copy()
    return {
        "train_x": torch.cat(xs).to(device),
        "train_y": torch.cat(ys).long().to(device),
        "test_x": torch.from_numpy(xt).to(device),
        "test_y": torch.from_numpy(yt).long().to(device),
        "train_files": [f.name for f in present],
    }


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """uint8 (N, 3, 32, 32) -> float in [0, 1], random 4-pixel-padded crop and flip."""
    n = x.shape[0]
    xf = F.pad(x.float() / 255.0, (4, 4, 4, 4))
    i = torch.randint(0, 9, (n,), generator=g, device=x.device)
    j = torch.randint(0, 9, (n,), generator=g, device=x.device)
    ar = torch.arange(32, device=x.device)
    ni = torch.arange(n, device=x.device)[:, None, None]
    rows = (i[:, None] + ar)[:, :, None]
    cols = (j[:, None] + ar)[:, None, :]
    out = xf.permute(0, 2, 3, 1)[ni, rows, cols].permute(0, 3, 1, 2)
    flip = torch.rand(n, generator=g, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _autocast(dev: torch.device, bf16: bool) -> Any:
    return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16)


def fast_at_setup(
    cfg: Any, dev: torch.device, steps_per_epoch: int, epochs: int
) -> tuple[Any, ...]:
    """Model, objective, optimizer and per-step scheduler of the Fast-AT paper recipe ``cfg``
    (:data:`RECIPE`, loaded), built by the functions ``robustlab train`` uses; and the settings,
    for the output."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(dev).to(memory_format=torch.channels_last)
    obj = check_objective(cfg)
    opt = build_optimizer(model, cfg.optim, dev)
    sched = build_scheduler(opt, cfg.schedule, steps_per_epoch, epochs, cfg.optim.lr,
                            cfg.optim.momentum)  # fmt: skip
    settings = {"recipe": str(RECIPE.relative_to(REPO)), "objective": cfg.objective.params,
                "input_norm": input_normalization(model), "lr": cfg.optim.lr,
                "momentum": [cfg.optim.momentum, cfg.schedule.base_momentum],
                "schedule": f"{cfg.schedule.name}, peak at {cfg.schedule.pct_start}",
                "weight_decay": cfg.optim.weight_decay,
                "memory_format": "channels_last"}  # fmt: skip
    return model, obj, opt, sched, settings


def train_epochs(model, obj, data, epochs, bs, opt, sched, dev, bf16, deadline) -> dict[str, Any]:
    """Training epochs (Fast-AT or PGD-AT) with ``opt`` and, if given, the per-step ``sched``;
    returns timing."""
    n = data["train_x"].shape[0]
    steps_per_epoch = n // bs
    g = torch.Generator(device=dev).manual_seed(0)
    state = StepState(raw_model=model, epochs=epochs, generator=g, steps_per_epoch=steps_per_epoch)
    step, done, t0 = 0, 0, time.perf_counter()
    for epoch in range(epochs):
        if time.perf_counter() > deadline:
            break
        perm = torch.randperm(n, generator=g, device=dev)
        model.train()
        for s in range(steps_per_epoch):
            idx = perm[s * bs : (s + 1) * bs]
            x = augment(data["train_x"][idx], g).contiguous(memory_format=torch.channels_last)
            y = data["train_y"][idx]
            state.epoch, state.step = epoch, step
            with _autocast(dev, bf16):
                loss, _ = obj(model, x, y, idx, state)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            step += 1
        done += 1
    _sync(dev)
    sec = time.perf_counter() - t0
    return {"epochs_done": done, "epochs_planned": epochs, "steps": step, "seconds": round(sec, 1),
            "images_per_s": round(step * bs / max(sec, 1e-9), 1)}  # fmt: skip


def step_throughput(model, obj, data, bs, dev, cl, bf16, steps) -> float:
    """Images/s of ``steps`` PGD-AT training steps (after one warm-up step)."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    g = torch.Generator(device=dev).manual_seed(1)
    state = StepState(raw_model=model, epochs=1, generator=g)
    fmt = torch.channels_last if cl else torch.contiguous_format
    model.to(memory_format=fmt).train()
    t0 = 0.0
    for s in range(steps + 1):
        if s == 1:
            _sync(dev)
            t0 = time.perf_counter()
        idx = torch.randint(0, data["train_x"].shape[0], (bs,), generator=g, device=dev)
        x = (data["train_x"][idx].float() / 255).contiguous(memory_format=fmt)
        with _autocast(dev, bf16):
            loss, _ = obj(model, x, data["train_y"][idx], idx, state)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(dev)
    return steps * bs / (time.perf_counter() - t0)


def evaluate(model, x, y, attack, bs, dev) -> dict[str, Any]:
    _sync(dev)
    r = robust_evaluate(model, x, y, attack, bs, dev)
    _sync(dev)
    # whole-step CUDA graphs of each Square stage's last call (None: not used)
    graphs = {label: sub.graph_stats for label, sub in attack.attacks if isinstance(sub, Square)}
    return {"seconds": round(r.seconds, 2), "robust_accuracy": r.robust_accuracy,
            "clean_accuracy": r.clean_accuracy,
            "per_attack": [{k: (round(v, 3) if isinstance(v, float) else v)
                            for k, v in p.items()} for p in r.per_attack],
            "square_step_graphs": graphs}  # fmt: skip


def eager(attack: Any) -> Any:
    """``attack`` (an ensemble) with its Square stages querying eagerly, not from CUDA graphs."""
    for _, sub in attack.attacks:
        if isinstance(sub, Square):
            sub.cuda_graphs = False
    return attack


def query_pass_ms(model, x, dev, rows=(22, 216), reps: int = 100) -> dict[str, Any]:
    """Milliseconds per inference pass at Square's query batch sizes (standard's about 216 rows,
    ``square-close``'s about 22 on this model), eagerly and replayed from a CUDA graph: the
    floor of a whole-step replay, and what its launches cost."""
    res: dict[str, Any] = {}
    for n in rows:
        xb = x[:n].float().div(255).contiguous(memory_format=torch.channels_last)
        for name, fwd in (("eager", model), ("replayed", GraphedForward(model, max_rows=None))):
            with torch.inference_mode():
                for _ in range(5):
                    fwd(xb)
                _sync(dev)
                t0 = time.perf_counter()
                for _ in range(reps):
                    fwd(xb)
                _sync(dev)
            res[f"{name}_{n}_rows"] = round((time.perf_counter() - t0) / reps * 1e3, 3)
    return res


def reference_aa(model, x, y, bs, dev) -> dict[str, Any]:
    try:
        from autoattack import AutoAttack as Ref
    except ImportError:
        return {"skipped": "the reference autoattack package is not installed here"}
    import contextlib
    import io

    model.eval()
    xf, yd = x.float() / 255.0, y
    _sync(dev)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        ref = Ref(model, norm="Linf", eps=EPS, version="standard", seed=0, device=dev)
        adv = ref.run_standard_evaluation(xf, yd, bs=bs)
    _sync(dev)
    sec = time.perf_counter() - t0
    with torch.no_grad():
        acc = float((model(adv).argmax(1) == yd).float().mean())
    return {"seconds": round(sec, 2), "robust_accuracy": acc}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="data/cifar-10-batches-bin")
    ap.add_argument("--train-batches", type=int, default=1)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--epochs", type=int, default=None, help="Fast-AT epochs (default: the "
                    "recipe's 15 x 5 / train batches, at most 30)")  # fmt: skip
    ap.add_argument("--batch-size", type=int, default=512, help="PGD-10 AT batch")
    ap.add_argument("--n-pgd", type=int, default=10_000, help="PGD-50 test images")
    ap.add_argument("--pgd-restarts", type=int, default=1)
    ap.add_argument("--n-eval", type=int, default=500)
    ap.add_argument("--budget-s", type=float, default=450.0)
    ap.add_argument("--tiny", action="store_true", help="tiny sizes: test every path on a CPU")
    ap.add_argument("--out", default="bench/results/gpu.json")
    args = ap.parse_args()
    start = time.perf_counter()
    deadline = start + args.budget_s
    dev = torch.device(args.device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    info = machine_info(dev)
    print(machine_line(info), flush=True)
    data = load_cifar(Path(args.data_dir), args.train_batches, dev)
    if args.tiny:
        data["train_x"], data["train_y"] = data["train_x"][:256], data["train_y"][:256]
        args.batch_size, args.n_pgd, args.n_eval = 64, 16, 4
    n_train = int(data["train_x"].shape[0])
    recipe = load_config(RECIPE, [])
    fa_batch = 64 if args.tiny else recipe.data.batch_size
    epochs = args.epochs or (
        1 if args.tiny else min(30, math.ceil(recipe.train.epochs * 5 / len(data["train_files"])))
    )
    out: dict[str, Any] = {"benchmark": "gpu", "machine": info, "device": str(dev),
                           "data": {"dir": args.data_dir, "train_files": data["train_files"],
                                    "train_images": n_train, "tiny": args.tiny}}  # fmt: skip

    def save(stage: str) -> None:
        out["elapsed_s"] = round(time.perf_counter() - start, 1)
        write_json(args.out, out)
        print(f"[{out['elapsed_s']:.0f}s] {stage}: {out.get(stage)}", flush=True)

    model, fast_at, opt, sched, settings = fast_at_setup(recipe, dev, n_train // fa_batch, epochs)
    # Fast-AT gets the budget left after ~40% reserved for the later stages
    fa_deadline = start + 0.55 * args.budget_s
    bf16 = dev.type == "cuda" or args.tiny
    fa = train_epochs(model, fast_at, data, epochs, fa_batch, opt, sched, dev, bf16, fa_deadline)
    precision = "bf16 autocast" if bf16 else "float32"
    fa.update(settings={**settings, "batch": fa_batch, "precision": precision})
    model.eval()
    xt, yt = data["test_x"][: args.n_pgd], data["test_y"][: args.n_pgd]
    pgd50 = PGD(eps=EPS, steps=50, step_size=2 / 255, random_start=True,
                restarts=args.pgd_restarts, seed=0)  # fmt: skip
    r = robust_evaluate(model, xt, yt, pgd50, 1000, dev)
    fa.update(clean_accuracy=r.clean_accuracy, pgd50_accuracy=r.robust_accuracy, n_test=len(yt),
              pgd50_restarts=args.pgd_restarts, pgd50_seconds=round(r.seconds, 1),
              reached_45=r.robust_accuracy >= 0.45)  # fmt: skip
    out["fast_at"] = fa
    save("fast_at")

    pgd10 = create_objective("pgd_at", eps=EPS, steps=10, step_size=2 / 255)
    steps = 1 if args.tiny else 10
    thr = {}
    for name, cl, bf16 in (("fp32_nchw", False, False), ("fp32_channels_last", True, False),
                           ("bf16_channels_last", True, True)):  # fmt: skip
        if time.perf_counter() > deadline - 120:
            thr[name] = "skipped (budget)"
            continue
        thr[name] = round(step_throughput(model, pgd10, data, 32 if args.tiny else 512, dev, cl,
                                          bf16, steps), 1)  # fmt: skip
    model.to(memory_format=torch.channels_last)
    epoch = "skipped (budget)"
    if time.perf_counter() < deadline - 100:
        sgd = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        epoch = train_epochs(model, pgd10, data, 1, args.batch_size, sgd, None, dev, True,
                             deadline)  # fmt: skip
    out["pgd10_at"] = {"images_per_s_by_setting": thr, "epoch_bf16_channels_last": epoch,
                       "train_images": n_train}  # fmt: skip
    save("pgd10_at")

    model.eval()
    # attacks shrink their batches as points fall: cudnn's per-shape autotuning would time itself
    torch.backends.cudnn.benchmark = False
    xe, ye = data["test_x"][: args.n_eval], data["test_y"][: args.n_eval]
    bs = 64 if args.tiny else 1000
    ev: dict[str, Any] = {"n": int(len(ye))}
    with torch.no_grad():  # warm-up: kernels loaded before the first timed attack
        model(xe[:bs].float() / 255)
    _sync(dev)
    # the reference first (it is the baseline), then robustlab's standard and fast presets
    if time.perf_counter() < deadline - 90:
        ev["reference_autoattack"] = reference_aa(model, xe, ye, bs, dev)
    else:
        ev["reference_autoattack"] = "skipped (budget)"
    out["evaluation"] = ev
    save("evaluation")
    variants = (  # Square's queries from CUDA graphs (the default) and eagerly, then bf16
        ("robustlab_autoattack_standard", lambda: AutoAttack(eps=EPS)),
        ("robustlab_fast", lambda: create_attack("fast", eps=EPS)),
        ("robustlab_autoattack_standard_eager", lambda: eager(AutoAttack(eps=EPS))),
        ("robustlab_fast_eager", lambda: eager(create_attack("fast", eps=EPS))),
        ("robustlab_autoattack_standard_bf16", lambda: AutoAttack(eps=EPS, precision="bf16")),
    )
    for name, make in variants:
        if time.perf_counter() > deadline - 30:
            ev[name] = "skipped (budget)"
            continue
        ev[name] = evaluate(model, xe, ye, make(), bs, dev)
        out["evaluation"] = ev
        save("evaluation")
    ref = ev.get("reference_autoattack")
    for suffix in ("", "_eager"):
        a, f = ev.get(f"robustlab_autoattack_standard{suffix}"), ev.get(f"robustlab_fast{suffix}")
        if isinstance(a, dict) and isinstance(f, dict):
            ev[f"fast_speedup_vs_standard{suffix}"] = round(
                a["seconds"] / max(f["seconds"], 1e-9), 2
            )
    for name in [v[0] for v in variants if v[0].startswith("robustlab_autoattack")]:
        a = ev.get(name)
        if isinstance(a, dict) and isinstance(ref, dict) and "seconds" in ref:
            key = name.replace("robustlab_autoattack_", "") + "_time_vs_reference"
            ev[key] = round(a["seconds"] / max(ref["seconds"], 1e-9), 3)
    out["evaluation"] = ev
    save("evaluation")
    if time.perf_counter() < deadline - 10:
        rows, reps = ((4, 16), 5) if args.tiny else ((22, 216), 100)
        out["query_pass_ms"] = query_pass_ms(model, xe, dev, rows, reps)
        save("query_pass_ms")


if __name__ == "__main__":
    main()
