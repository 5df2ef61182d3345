"""``robustlab train RECIPE.yaml [--run-dir DIR] [--resume] [key=value ...]``: run a recipe.

Also what ``torchrun --nproc-per-node N -m robustlab train ...`` runs on every process.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from robustlab.errors import ConfigError

__all__ = ["register", "run"]


class _IntermixedParser(argparse.ArgumentParser):
    """Accepts options between positionals (``RECIPE --run-dir D key=value``)."""

    _inner = False

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if self._inner:
            return super().parse_known_args(args, namespace)
        self._inner = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inner = False


def register(subparsers: argparse._SubParsersAction) -> None:
    saved = subparsers._parser_class
    subparsers._parser_class = _IntermixedParser
    try:
        p = _add_parser(subparsers)
    finally:
        subparsers._parser_class = saved
    p.set_defaults(func=run)


def _add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="train a model from a recipe",
        description=(
            "Train a model from a YAML recipe (see docs/recipes.md). Overrides use dotted keys, "
            "e.g. train.epochs=3 objective.eps=8/255. Under torchrun every process runs this "
            "and they train together with DistributedDataParallel."
        ),
    )
    p.add_argument(
        "args",
        nargs="*",
        metavar="RECIPE.yaml | key=value",
        help="the recipe, then overrides (no recipe: the defaults of docs/recipes.md; with "
        "--resume and no recipe: the run's config.yaml)",
    )
    p.add_argument("--run-dir", type=Path, default=None, help="run directory (default runs/NAME)")
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --run-dir from last.pt"
    )
    p.add_argument("--device", default=None, help="shortcut for train.device=DEVICE")
    p.add_argument("--data-dir", default=None, help="shortcut for data.data_dir=DIR")
    return p


def run(args: argparse.Namespace) -> int:
    from robustlab.api import train  # composes the run: builds the configured callbacks
    from robustlab.config import load_config

    recipe: str | None = None
    overrides: list[str] = []
    for a in args.args:
        if "=" in a:
            overrides.append(a)
        elif recipe is None and not overrides:
            recipe = a
        else:
            raise ConfigError(f"unexpected argument {a!r}; overrides look like key=value")
    if args.device:
        overrides.append(f"train.device={args.device}")
    if args.data_dir:
        overrides.append(f"data.data_dir={args.data_dir}")
    run_dir = args.run_dir
    recipe_path: Path | None = Path(recipe) if recipe is not None else None
    if recipe_path is None and args.resume:
        if run_dir is None:
            raise ConfigError("--resume needs --run-dir DIR (or a recipe naming the run)")
        from robustlab.train.rundir import RunDir

        recipe_path = RunDir(run_dir).config
        if not recipe_path.is_file():
            raise ConfigError(f"{run_dir} is not a run directory (no config.yaml to resume)")
    cfg = load_config(recipe_path, overrides)
    out = train(cfg, run_dir=run_dir, resume=args.resume)
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        print(f"robustlab: run complete: {out}")
    return 0
