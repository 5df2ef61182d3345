"""The ``robustlab`` command line: one subcommand module per job, registered here.

Each module in ``robustlab.cli`` that is listed in ``SUBCOMMANDS`` exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a function taking the
parsed ``argparse.Namespace`` and returning an exit status. User errors
(:class:`robustlab.errors.RobustlabError`) are printed as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from robustlab import __version__
from robustlab.errors import RobustlabError

# Order here is the order in ``robustlab --help``.
SUBCOMMANDS = ["data", "models", "eval", "train", "analyze", "report", "demo", "reproduce"]


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="robustlab",
        description="Train, attack, evaluate and explain adversarially robust classifiers.",
    )
    parser.add_argument("--version", action="version", version=f"robustlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"robustlab.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"robustlab.cli.{name}":
                continue  # subcommand not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except RobustlabError as e:
        print(f"robustlab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("robustlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
