"""``robustlab models``: the registered architectures with their defaults (input size, classes,
layer normalization and input normalization), one line each."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``models`` subcommand."""
    p = subparsers.add_parser(
        "models",
        help="list the architectures and their defaults",
        description="List every registered architecture (robustlab.models) with the input it "
        "expects when no dataset is given (channels x size x size), its classes, its "
        "normalization layers and whether it normalizes inputs with the dataset's statistics "
        "(a dataset, when given to eval or a recipe, sets input size and classes).",
    )
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``robustlab models``; returns the exit status."""
    from robustlab.models import available_models
    from robustlab.models.registry import model_spec

    rows = []
    for name in available_models():
        s = model_spec(name)
        rows.append(
            {
                "name": name,
                "input": f"{s.in_channels}x{s.input_size}x{s.input_size}",
                "classes": s.num_classes,
                "layers": s.norm,
                "input_normalization": "dataset" if s.dataset_normalization else "none",
                "description": s.description,
            }
        )
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{'model':<22} {'input':<9} {'classes':>7}  {'layers':<6} input normalization")
    for r in rows:
        print(
            f"{r['name']:<22} {r['input']:<9} {r['classes']:>7}  {r['layers']:<6} "
            f"{r['input_normalization']}"
        )
    return 0
