"""``robustlab train RECIPE.yaml [--run-dir DIR] [--resume] [key=value ...]``: run a recipe.

Also what ``torchrun --nproc-per-node N -m robustlab train ...`` runs on every process.
"""

from __future__ import annotations

import argparse
import os
import sys
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
    from robustlab.cli.train_output import describe_validation, training_summary
    from robustlab.config import load_config
    from robustlab.train.rundir import default_run_dir

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
    if args.resume and run_dir is not None:
        _check_resumable(run_dir)  # before reading its config: say what is missing
    recipe_path: Path | None = Path(recipe) if recipe is not None else None
    if recipe_path is None and args.resume:
        if run_dir is None:
            raise ConfigError("--resume needs --run-dir DIR (or a recipe naming the run)")
        from robustlab.train.rundir import RunDir

        recipe_path = RunDir(run_dir).config
        if not recipe_path.is_file():
            raise ConfigError(f"{run_dir} is not a run directory (no config.yaml to resume)")
    cfg = load_config(recipe_path, overrides)
    main = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 reports
    target = Path(run_dir) if run_dir is not None else default_run_dir(cfg.name)
    if args.resume and run_dir is None:
        _check_resumable(target)
    if main:
        print(describe_validation(cfg))
    try:
        out = train(cfg, run_dir=run_dir, resume=args.resume)
    except KeyboardInterrupt:
        if main:
            print(_interrupted(target), file=sys.stderr)
        return 130
    if main:
        print(training_summary(out))
    return 0


def _interrupted(run_dir: Path) -> str:
    """After Ctrl-C: how to continue (or that nothing was saved yet)."""
    from robustlab.train.rundir import RunDir

    if RunDir(run_dir).checkpoint("last").is_file():
        return (
            "robustlab: interrupted; continue from the last checkpoint with: "
            f"robustlab train --resume --run-dir {run_dir}"
        )
    return "robustlab: interrupted before the first checkpoint; nothing to resume, start again"


def _check_resumable(run_dir: Path) -> None:
    """``--resume`` needs a run to continue: say so when there is none."""
    from robustlab.train.rundir import RunDir

    run = RunDir(run_dir)
    if not run.root.is_dir():
        raise ConfigError(
            f"--resume: {run_dir} does not exist, so there is nothing to resume; "
            "drop --resume to start a new run there"
        )
    if not run.checkpoint("last").is_file() and not run.is_complete():
        raise ConfigError(
            f"--resume: {run_dir} has no checkpoint yet ({run.relative(run.checkpoint('last'))}"
            " is missing); delete the folder to start again, or choose another --run-dir"
        )
