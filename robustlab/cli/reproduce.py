"""``robustlab reproduce``: train, evaluate and check a paper's claims in several seeds."""

from __future__ import annotations

import argparse
import os

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``reproduce`` subcommand."""
    p = subparsers.add_parser(
        "reproduce",
        help="check a paper's claims end to end (plan, train, evaluate, verdicts)",
        description="Train the runs a paper's claims need (recipes plus overrides per seed; "
        "finished runs are reused, killed runs resume), evaluate every model under the "
        "worst-case protocol and write claims.json, claims.md, figures and report.html.",
    )
    p.add_argument("paper", help="logits | uncertainty | metric | dyart | all")
    p.add_argument("--scale", default="cpu", help="cpu | gpu | paper (default cpu)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--run-dir", default=None, help="root folder (default runs/reproduce-SCALE)")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (default 1)")
    p.add_argument("--launcher", default="local", help="local | slurm (submitit)")
    p.add_argument(
        "--slurm",
        action="append",
        metavar="KEY=VALUE",
        help="a submitit parameter for --launcher slurm, repeatable: slurm_partition=gpu, "
        "gpus_per_node=1, cpus_per_task=8, timeout_min=120 (default timeout_min=240)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="root of the datasets (default: $ROBUSTLAB_DATA, else the per-user cache)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan and its cost only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from robustlab.reproduce.runner import parse_seeds, parse_slurm_params, reproduce

    seeds = parse_seeds(args.seeds)
    slurm = parse_slurm_params(args.slurm)
    if args.data_dir is not None:
        # the runs (in this process, worker processes or Slurm jobs) read the root from here
        os.environ["ROBUSTLAB_DATA"] = os.path.abspath(args.data_dir)
    reproduce(
        args.paper,
        scale=args.scale,
        seeds=seeds,
        run_dir=args.run_dir,
        jobs=args.jobs,
        launcher=args.launcher,
        slurm=slurm,
        dry_run=args.dry_run,
    )
    return 0
