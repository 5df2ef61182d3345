"""``robustlab eval``: load a model and its weights, report accuracy on a dataset's test split."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import yaml

from robustlab.errors import RobustlabError


def _model_kw(items: list[str]) -> dict[str, Any]:
    """Parse repeated ``KEY=VALUE`` options (values read as YAML scalars: 34, 0.3, true)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RobustlabError(f"--model-kw expects KEY=VALUE, got {item!r}")
        out[key.strip().replace("-", "_")] = yaml.safe_load(value)
    return out


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``eval`` subcommand."""
    p = subparsers.add_parser(
        "eval",
        help="evaluate a model checkpoint on a dataset's test split",
        description="Load --weights into --model and report clean accuracy on the test split "
        "of --dataset (the first --n images).",
    )
    p.add_argument("--model", required=True, help="architecture name (see robustlab.models)")
    p.add_argument("--weights", required=True, help="checkpoint file (.pt state dict)")
    p.add_argument("--dataset", required=True, help="dataset name, e.g. mnist, cifar10")
    p.add_argument("--data-dir", default=None, help="data root (default: $ROBUSTLAB_DATA/cache)")
    p.add_argument("--n", type=int, default=None, help="evaluate the first N test images")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--remap", choices=["none", "auto"], default="none",
                   help="auto: load by tensor order when key names differ")  # fmt: skip
    p.add_argument("--checkpoint-key", default=None,
                   help="entry of the checkpoint holding the weights (e.g. ema)")  # fmt: skip
    p.add_argument("--norm", choices=["bn", "gn", "none"], default=None,
                   help="normalization layers (default: the architecture's)")  # fmt: skip
    p.add_argument("--act", choices=["relu", "silu"], default="relu")
    p.add_argument("--model-kw", action="append", default=[], metavar="KEY=VALUE",
                   help="extra architecture option, e.g. depth=34 (repeatable)")  # fmt: skip
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--out", default=None, help="also write the JSON summary to this file")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``robustlab eval``; returns the exit status."""
    from robustlab.data import load_split
    from robustlab.evaluate import clean_accuracy, resolve_device
    from robustlab.io import write_json
    from robustlab.models import create_model, load_checkpoint

    if args.batch_size < 1:
        raise RobustlabError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.n is not None and args.n < 1:
        raise RobustlabError(f"--n must be >= 1, got {args.n}")
    device = resolve_device(args.device)
    model = create_model(
        args.model, dataset=args.dataset, norm=args.norm, act=args.act, **_model_kw(args.model_kw)
    )
    report = load_checkpoint(model, args.weights, remap=args.remap, key=args.checkpoint_key)
    if report.remapped and not args.json:
        print(f"remapped {len(report.remapped)} keys by position:", file=sys.stderr)
        for old, new in report.remapped.items():
            print(f"  {old} -> {new}", file=sys.stderr)
    split = load_split(args.dataset, "test", root=args.data_dir)
    total = len(split)
    n = total if args.n is None else args.n
    if n > total:
        raise RobustlabError(
            f"--n {n} is larger than the {args.dataset} test split ({total} images)"
        )
    x, y = split.images[:n], split.labels[:n]
    t0 = time.perf_counter()
    acc = clean_accuracy(model, x, y, args.batch_size, device, progress=not args.quiet)
    seconds = time.perf_counter() - t0
    result = {
        "model": args.model,
        "weights": str(args.weights),
        "dataset": args.dataset,
        "split": "test",
        "n": n,
        "correct": round(acc * n),
        "clean_accuracy": acc,
        "device": str(device),
        "remapped": report.remapped,
        "seconds": round(seconds, 3),
    }
    if args.out:
        write_json(args.out, result)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{args.model} on {args.dataset} test ({n} images): clean accuracy "
            f"{100 * acc:.2f}% ({result['correct']}/{n}) [{seconds:.1f}s on {device}]"
        )
    return 0
