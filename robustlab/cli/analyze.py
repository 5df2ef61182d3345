"""``robustlab analyze``: run analyses on trained runs, writing JSON, arrays and PNG figures
into each ``RUN/analysis/``."""

from __future__ import annotations

import argparse
import json

from robustlab.errors import RobustlabError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``analyze`` subcommand."""
    from robustlab.analysis.base import analysis_names

    p = subparsers.add_parser(
        "analyze",
        help="explain trained runs: logits, margins, boundary dynamics, Jacobian, Fisher",
        description="Analyse each RUN_DIR's delivered model on N seeded test samples (the same "
        "samples for every run) and write RUN/analysis/summary.json, per-sample arrays (.npz) "
        "and PNG figures.",
    )
    p.add_argument("run_dirs", nargs="*", metavar="RUN_DIR",
                   help="run directories (or/and --model/--weights)")  # fmt: skip
    names = ",".join(analysis_names(default_only=True))
    p.add_argument(
        "--what",
        default=None,
        help=f"comma-separated analyses: {','.join(analysis_names())} (default: {names})",
    )
    p.add_argument("--n", type=int, default=1000, help="test samples to analyse (default 1000)")
    p.add_argument("--norm", default="linf", help="threat norm for margins/dynamics: linf or l2")
    p.add_argument("--eps", default=None,
                   help="eps, e.g. 0.3 or 8/255 (default: the dataset's usual eps)")  # fmt: skip
    p.add_argument("--data-dir", default=None, help="data root (default: the run's, then cache)")
    p.add_argument("--seed", type=int, default=0, help="picks the test samples and restarts")
    p.add_argument("--objective", action="append", default=None, metavar="NAME[:K=V,...]",
                   help="objective whose gradient drives the dynamics, e.g. pgd_at:eps=0.3 "
                   "(repeatable: one panel each; default: the run's own)")  # fmt: skip
    p.add_argument("--margin-steps", type=int, default=100, help="boundary-solver iterations")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.add_argument("--json", action="store_true", help="print the summaries as JSON")
    from robustlab.cli.third_party import add_import_options

    add_import_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``robustlab analyze``; returns the exit status."""
    from robustlab.analysis.run import (
        analyze_run,
        find_checkpoint,
        objective_from_spec,
        parse_analyses,
    )
    from robustlab.attacks.threat import check_eps_scale, make_threat, parse_eps

    what = parse_analyses(args.what)
    eps = None if args.eps is None else parse_eps(args.eps)
    make_threat(args.norm, eps or 1.0)  # unknown norm: error before any work
    if eps is not None:
        check_eps_scale(eps, args.norm, "--eps")
    if args.n is not None and args.n <= 0:
        raise RobustlabError(f"--n must be positive, got {args.n}")
    for spec in args.objective or []:
        objective_from_spec(spec)  # bad names or values: an error before any work
    from robustlab.cli.third_party import import_from_args

    imported = import_from_args(args)
    args.run_dirs = list(args.run_dirs) + ([str(imported)] if imported is not None else [])
    if not args.run_dirs:
        raise RobustlabError(
            "give RUN_DIR(s), or third-party weights with --model/--weights/--dataset"
        )
    for run_dir in args.run_dirs:  # every bad directory is reported before any work
        find_checkpoint(run_dir)
        _check_n(run_dir, args.n, args.data_dir)
    results = {}
    for run_dir in args.run_dirs:
        summary = analyze_run(
            run_dir, what, n=args.n, norm=args.norm, eps=eps, data_dir=args.data_dir,
            seed=args.seed, objective=args.objective, margin_steps=args.margin_steps,
            device=args.device,
        )  # fmt: skip
        if not args.no_figures:
            from robustlab.report.html import write_run_figures

            write_run_figures(run_dir)
        results[str(run_dir)] = summary
        if not args.json:
            print(f"{run_dir}: {_headline(summary)}")
    if args.json:
        print(json.dumps(results, indent=2, default=float))
    return 0


def _check_n(run_dir: str, n: int | None, data_dir: str | None) -> None:
    """``--n`` above the run's test split is refused (it would silently analyse fewer)."""
    from robustlab.data import load_split
    from robustlab.train.checkpoint import read_run_config

    if n is None:
        return
    cfg = read_run_config(run_dir)
    total = len(load_split(cfg.data.dataset, "test", root=data_dir or cfg.data.data_dir))
    if n > total:
        raise RobustlabError(
            f"--n {n} is larger than the {cfg.data.dataset} test split of {run_dir} "
            f"({total} images); use --n {total} or fewer"
        )


def _headline(s: dict) -> str:
    """Each registered analysis's headline numbers (:meth:`Analysis.headline`), in order,
    after the input normalization of third-party weights."""
    from robustlab.analysis.base import registered_analyses
    from robustlab.cli.third_party import print_normalization

    norm = s.get("meta", {}).get("input_normalization")
    parts = [print_normalization(norm)] if norm else []
    parts += [
        text
        for analysis in registered_analyses()
        if isinstance(s.get(analysis.name), dict)
        for text in analysis.headline(s[analysis.name])
    ]
    return ", ".join(parts) + " (written to analysis/)"
