"""Strength check of the ``fast`` preset against AutoAttack standard on any trained runs: on the
same images, with the same seed, does ``fast`` break every point that AutoAttack standard breaks?

For each run directory given and each eps, both evaluations run one after another in this
process (float32, channels_last, 1 thread). Reported per (run, eps): clean and robust accuracy
of both, the points ``fast`` leaves robust that standard broke (``fast_misses``: the test fails
on any), the points ``fast`` broke that standard did not, and both CPU times with their ratio.

Meant for models that played no part in choosing ``fast``'s settings (those were chosen on
MNIST and CIFAR-10 test images 1000-1199): e.g. the reproductions' Fashion-MNIST runs, whose
objectives (label smoothing, entropy maximisation, distillation, Fisher regularisation, DyART)
are the kinds that can mask gradients. The list of runs and eps is fixed before the results are
seen; a run that fails the test is reported, never dropped.

``--standard-from FILE`` takes AutoAttack standard's record for a (run, eps) from an earlier
result of this script with the same --n, --start and --seed instead of running it again (for a
changed ``fast`` while standard's code is unchanged; its CPU time is the earlier measurement,
and the entry names the file); pairs the file lacks run standard as usual.

Resumable: the JSON (written atomically after every pair) is read back on start and pairs
already in it are skipped; a different --n, --start, --seed or --fast-option refuses to mix
with it.

``--fast-option KEY=VALUE`` (repeatable; the value read as YAML) passes an option to the ``fast``
preset, e.g. ``malt_point=apgd-ce``; the JSON records them under ``fast_options``.

``--diagnose`` (after the runs): every image in a pair's misses and extras is attacked alone by
targeted APGD (100 steps, targeted DLR) against each other class with seeds 0-9; the JSON gets,
per image, the successes per target, in AutoAttack's logit order and in MALT's order. A target
ranked in MALT's first three that breaks the image in some seeds only is run-to-run variance; a
target ranked below them is a miss of MALT's ranking.

Usage: python bench/fast_validation.py RUN_DIR [RUN_DIR ...] [--eps 0.1,0.05] [--n 200]
       [--start 2000] [--seed 0] [--which best] [--diagnose] [--standard-from FILE] [--out FILE]
       [--fast-option KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_eval import SHARED, run_robustlab  # noqa: E402
from machine import machine_info, machine_line  # noqa: E402

from robustlab.attacks import AutoAttack, create_attack, parse_eps  # noqa: E402
from robustlab.attacks.apgd import apgd  # noqa: E402
from robustlab.attacks.fast import malt_targets  # noqa: E402
from robustlab.attacks.threat import make_threat  # noqa: E402
from robustlab.data import load_split  # noqa: E402
from robustlab.errors import RobustlabError  # noqa: E402
from robustlab.io import write_json  # noqa: E402
from robustlab.train.checkpoint import load_run_model  # noqa: E402


def compare(standard: dict, fast: dict) -> dict[str, Any]:
    """What ``fast`` missed and what it found, from the two evaluations' robust masks."""
    s, f = standard["robust_mask"], fast["robust_mask"]
    pairs = list(enumerate(zip(s, f, strict=True)))  # masks of one image set
    misses = [i for i, (a, b) in pairs if a == "0" and b == "1"]
    extra = [i for i, (a, b) in pairs if a == "1" and b == "0"]
    return {
        "fast_misses": misses,  # robust under fast, broken by standard (the test fails on any)
        "fast_extra": extra,  # broken by fast, robust under standard
        "fast_at_least_as_strong": not misses,
        "speedup": round(standard["cpu_seconds"] / max(fast["cpu_seconds"], 1e-9), 2),
    }


def diagnose(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> dict:
    """One image (``x`` (1, C, H, W)) attacked by targeted APGD against every other class with
    seeds 0-9: successes per target, and the targets in logit order and in MALT's order."""
    threat = make_threat("linf", eps)
    with torch.no_grad():
        z = model(x)[0]
    logit_order = [int(k) for k in z.argsort(descending=True) if int(k) != int(y)]
    malt = malt_targets(model, x, y, threat, len(logit_order), len(logit_order))[0].tolist()
    wins = {}
    for t in logit_order:
        gens = [torch.Generator().manual_seed(seed) for seed in range(10)]
        hits = [apgd(model, x, y, threat, steps=100, loss="dlr", y_target=torch.tensor([t]),
                     generator=g).broken[0] for g in gens]  # fmt: skip
        wins[str(t)] = int(sum(bool(h) for h in hits))
    return {"label": int(y), "logit_order": logit_order, "malt_order": malt, "wins_of_10": wins}


def table(result: dict) -> str:
    """Markdown table, one row per (run, eps)."""
    lines = [machine_line(result["machine"]), "",
             f"test images {result['start']}-{result['start'] + result['n'] - 1}, "
             f"seed {result['seed']}", "",
             "| run | eps | clean | standard | fast | fast misses | fast extra | "
             "standard CPU s | fast CPU s | speedup |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for e in result["pairs"]:
        s, f = e["standard"], e["fast"]
        lines.append(
            f"| {e['run']} | {e['eps']:.4g} | {s['clean_accuracy']:.3f} | "
            f"{s['robust_accuracy']:.3f} | {f['robust_accuracy']:.3f} | "
            f"{len(e['fast_misses'])} | {len(e['fast_extra'])} | {s['cpu_seconds']:.1f} | "
            f"{f['cpu_seconds']:.1f} | {e['speedup']:.1f}x |"
        )
    return "\n".join(lines)


def _head(args: argparse.Namespace) -> dict[str, Any]:
    return {"benchmark": "fast_validation", "n": args.n, "start": args.start, "seed": args.seed}


def _read_same_setting(path: Path, args: argparse.Namespace, what: str) -> dict[str, Any]:
    """An earlier result of this script at ``path``, which must hold this run's --n, --start
    and --seed (a one-line error naming ``what`` otherwise)."""
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"{what} {path}: not a readable result ({err})") from None
    clash = {k: (old.get(k), v) for k, v in _head(args).items() if old.get(k) != v}
    if clash:
        raise SystemExit(f"{what} {path} holds another setting {clash}")
    return old


def _load(out: Path, args: argparse.Namespace, opts: dict[str, Any]) -> dict[str, Any]:
    if not out.exists():
        return {**_head(args), "fast_options": opts, "machine": machine_info(), "pairs": []}
    old = _read_same_setting(out, args, "--out (pass another)")
    held = old.get("fast_options", {})
    if held != opts:
        raise SystemExit(f"--out {out} holds fast options {held}, not {opts}")
    return old


def _fast_options(items: list[str], eps: float) -> dict[str, Any]:
    """``KEY=VALUE`` options of the fast preset (values read as YAML), checked by building it."""
    opts: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--fast-option takes KEY=VALUE, got {item!r}")
        opts[key] = yaml.safe_load(value)
    try:
        create_attack("fast", eps=eps, **opts)
    except (TypeError, RobustlabError) as err:
        raise SystemExit(f"--fast-option: {err}") from None
    return opts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run directories (robustlab train)")
    ap.add_argument("--eps", default="0.1,0.05", help="comma-separated eps (8/255 allowed)")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--start", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--which", default="best", choices=("best", "last", "ema"))
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--data-dir", default=str(SHARED / "data"))
    ap.add_argument("--diagnose", action="store_true", help="per-target study of the misses")
    ap.add_argument("--standard-from", help="earlier result: reuse its AutoAttack standard runs")
    ap.add_argument("--out", default=str(HERE / "results" / "fast_validation.json"))
    ap.add_argument(
        "--fast-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the fast preset (repeatable), e.g. malt_point=apgd-ce",
    )
    args = ap.parse_args()
    if args.n < 1 or args.start < 0:
        raise SystemExit(f"--n must be >= 1 and --start >= 0, got {args.n} and {args.start}")
    eps_list = [parse_eps(e) for e in args.eps.split(",")]
    opts = _fast_options(args.fast_option, eps_list[0])
    for r in args.runs:  # every run directory is checked before any evaluation
        if not (Path(r) / "config.yaml").is_file():
            raise SystemExit(f"{r}: not a run directory (no config.yaml)")
    torch.set_num_threads(1)
    out = Path(args.out)
    result = _load(out, args, opts)
    earlier = _standard_records(args)
    print(machine_line(result["machine"]), flush=True)
    done = {(e["run"], e["eps"]) for e in result["pairs"]}
    for run in args.runs:
        if all((run, eps) in done for eps in eps_list):
            continue
        model, cfg = load_run_model(run, which=args.which)
        sp = load_split(cfg.data.dataset, "test", root=args.data_dir)
        sl = slice(args.start, args.start + args.n)
        x, y = sp.images[sl].float() / 255.0, sp.labels[sl].long()
        if x.shape[0] < args.n:
            raise SystemExit(f"{run}: the {cfg.data.dataset} test split has no images "
                             f"{args.start}-{args.start + args.n - 1}")  # fmt: skip
        for eps in eps_list:
            if (run, eps) in done:
                continue
            s = earlier.get((run, eps))
            if s is None:
                std = AutoAttack(eps=eps, seed=args.seed)
                s = run_robustlab(model, x, y, std, args.batch_size, profile=False)
            fast = create_attack("fast", eps=eps, seed=args.seed, **opts)
            f = run_robustlab(model, x, y, fast, args.batch_size, profile=False)
            entry = {"run": run, "dataset": cfg.data.dataset, "model": cfg.model.name,
                     "objective": cfg.objective.name, "eps": eps, "standard": s, "fast": f,
                     **compare(s, f)}  # fmt: skip
            if (run, eps) in earlier:
                entry["standard_from"] = args.standard_from
            result["pairs"].append(entry)
            write_json(out, result)
            print(f"{run} eps {eps:.4g}: standard {s['robust_accuracy']:.3f} "
                  f"({s['cpu_seconds']} s), fast {f['robust_accuracy']:.3f} "
                  f"({f['cpu_seconds']} s), misses {entry['fast_misses']}", flush=True)  # fmt: skip
    if args.diagnose:
        _diagnose_all(result, args, out)
    print(table(result))


def _standard_records(args: argparse.Namespace) -> dict[tuple[str, float], dict]:
    """AutoAttack standard's records by (run, eps) from ``--standard-from`` (none without it);
    the file must hold the same --n, --start and --seed."""
    if not args.standard_from:
        return {}
    old = _read_same_setting(Path(args.standard_from), args, "--standard-from")
    return {(e["run"], e["eps"]): e["standard"] for e in old["pairs"]}


def _diagnose_all(result: dict, args: argparse.Namespace, out: Path) -> None:
    for e in result["pairs"]:
        todo = [
            i for i in e["fast_misses"] + e["fast_extra"] if str(i) not in e.get("diagnosis", {})
        ]
        if not todo:
            continue
        model, cfg = load_run_model(e["run"], which=args.which)
        sp = load_split(cfg.data.dataset, "test", root=args.data_dir)
        for i in todo:
            j = args.start + i
            x, y = sp.images[j : j + 1].float() / 255.0, sp.labels[j : j + 1].long()
            e.setdefault("diagnosis", {})[str(i)] = d = diagnose(model, x, y, e["eps"])
            write_json(out, result)
            print(f"{e['run']} eps {e['eps']:.4g} image {j}: {d}", flush=True)


if __name__ == "__main__":
    main()
