"""``robustlab report``: one self-contained HTML page comparing runs (figures embedded)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``report`` subcommand."""
    p = subparsers.add_parser(
        "report",
        help="build one self-contained HTML report comparing runs",
        description="Read each RUN_DIR (configuration, summary, eval/ and analysis/ from "
        "`robustlab analyze`) and write one HTML page with accuracy and analysis tables and "
        "the figures embedded; it opens from disk with no server.",
    )
    p.add_argument("run_dirs", nargs="*", metavar="RUN_DIR",
                   help="run directories, one dataset (or/and --model/--weights)")  # fmt: skip
    p.add_argument("-o", "--out", default="report.html", help="output file (default report.html)")
    p.add_argument("--title", default="robustlab report", help="page title")
    from robustlab.cli.third_party import add_import_options

    add_import_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``robustlab report``; returns the exit status."""
    import sys
    from pathlib import Path

    from robustlab.cli.third_party import import_from_args
    from robustlab.errors import RobustlabError
    from robustlab.report.html import build_report

    seen: set[Path] = set()
    unique = []
    for d in args.run_dirs:
        key = Path(d).resolve()
        if key in seen:
            print(f"robustlab: warning: {d} is given more than once; the report shows it once",
                  file=sys.stderr)  # fmt: skip
            continue
        seen.add(key)
        unique.append(d)
    imported = import_from_args(args)
    runs = unique + ([str(imported)] if imported is not None else [])
    if not runs:
        raise RobustlabError(
            "give RUN_DIR(s), or third-party weights with --model/--weights/--dataset"
        )
    out = build_report(runs, args.out, title=args.title)
    print(f"report written to {out}")
    return 0
