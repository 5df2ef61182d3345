"""``robustlab demo``: the quickstart, end to end on the MNIST slice embedded in the package.

Trains a standard and a PGD-AT LeNet-5 on ``mnist-mini`` (no download), evaluates both under
attack, analyses their logits, margins, Jacobians and Fisher metric, and writes one HTML report.
Each stage reuses the run directory it finds complete, so an interrupted demo resumes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EPS = 0.2  # MNIST is usually attacked at 0.3; 0.2 lets a 3-epoch PGD-AT run learn


def _config(
    name: str, objective: dict[str, Any], epochs: int, seed: int, select: str, n_train: int | None
) -> dict[str, Any]:
    return {
        "name": name,
        "seed": seed,
        "data": {"dataset": "mnist-mini", "n_train": n_train, "n_val": 500, "batch_size": 128},
        "model": {"name": "lenet5"},
        "objective": objective,
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
        "schedule": {"name": "cosine", "warmup_epochs": 0.5},
        "train": {"epochs": epochs, "log_every": 20, "device": "cpu"},
        "validation": {
            "every": 1,
            "n": 500,
            "select": select,
            "attack": {"name": "pgd", "norm": "linf", "eps": EPS, "steps": 10},
        },
    }


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="quickstart: train, attack, explain and report on embedded MNIST",
        description=__doc__,
    )
    p.add_argument("--run-dir", default="runs/quickstart", help="folder for the demo's runs")
    p.add_argument("--epochs", type=int, default=3, help="training epochs per model")
    p.add_argument("--n-train", type=int, default=None, help="training images (default all)")
    p.add_argument("--n-eval", type=int, default=500, help="test images for the attacks")
    p.add_argument("--n-analysis", type=int, default=300, help="test images for the analyses")
    p.add_argument("--seed", type=int, default=0, help="seed of training, attacks and analyses")
    p.set_defaults(func=run)


def _say(msg: str) -> None:
    print(f"[demo] {msg}", file=sys.stderr, flush=True)


# The embedded MNIST slice: 10,000 training images (500 held out for validation) and 2,000
# test images; batches of 128.
_TRAIN, _TEST, _BATCH = 9_500, 2_000, 128


def _check_options(args: argparse.Namespace) -> None:
    """Every demo option, checked (and named as the demo's own flag) before any training."""
    from robustlab.errors import RobustlabError
    from robustlab.io import check_writable

    if args.epochs < 1:
        raise RobustlabError(f"demo --epochs must be >= 1, got {args.epochs}")
    if args.n_train is not None and not _BATCH <= args.n_train <= _TRAIN:
        raise RobustlabError(
            f"demo --n-train must be between {_BATCH} (one batch) and {_TRAIN} (the embedded "
            f"MNIST slice less its 500 validation images), got {args.n_train}"
        )
    for flag, value in (("--n-eval", args.n_eval), ("--n-analysis", args.n_analysis)):
        if not 1 <= value <= _TEST:
            raise RobustlabError(
                f"demo {flag} must be between 1 and {_TEST} (the embedded MNIST test images), "
                f"got {value}"
            )
    check_writable(args.run_dir, "demo --run-dir", directory=True)


def run(args: argparse.Namespace) -> int:
    from robustlab.api import train  # composes the run: robustlab's callbacks by name
    from robustlab.cli import main as cli_main
    from robustlab.cli.eval_output import eval_name
    from robustlab.config import config_from_dict
    from robustlab.train.rundir import RunDir

    _check_options(args)
    root = Path(args.run_dir)
    runs = {
        "standard": {"name": "standard"},
        "pgd_at": {"name": "pgd_at", "eps": EPS, "norm": "linf", "steps": 7, "step_size": 0.05},
    }
    configs = {}
    for name, objective in runs.items():  # every configuration checked before any training
        select = "clean" if name == "standard" else "robust"
        cfg = _config(name, objective, args.epochs, args.seed, select, args.n_train)
        config_from_dict(cfg)
        configs[name] = cfg
    dirs = []
    for name, cfg in configs.items():
        run_dir = root / name
        _say(f"training {name} -> {run_dir}")
        train(cfg, run_dir=run_dir, resume=True)
        dirs.append(run_dir)

    for run_dir in dirs:
        for attack in (["pgd", "--steps", "40", "--loss", "ce"], ["apgd-t"]):
            done = RunDir(run_dir).evaluation(
                eval_name(attack[0], "linf", EPS, args.n_eval, args.seed, 1)
            )
            if done.summary.is_file():  # an interrupted demo resumes: keep what is done
                _say(f"{run_dir.name} under {attack[0]}: already evaluated ({done.root})")
                continue
            _say(f"evaluating {run_dir.name} under {attack[0]} at eps {EPS}")
            rc = cli_main(
                [
                    "eval",
                    "--run",
                    str(run_dir),
                    "--attack",
                    *attack,
                    "--eps",
                    str(EPS),
                    "--n",
                    str(args.n_eval),
                    "--seed",
                    str(args.seed),
                    "--quiet",
                ]
            )
            if rc:
                return rc

    _say("analysing logits, margins, Jacobians and Fisher metric")
    rc = cli_main(
        [
            "analyze",
            *map(str, dirs),
            "--what",
            "logits,margins,dynamics,jacobian,fisher",
            "--n",
            str(args.n_analysis),
            "--eps",
            str(EPS),
            "--seed",
            str(args.seed),
            "--margin-steps",
            "50",
        ]
    )
    if rc:
        return rc
    out = root / "report.html"
    rc = cli_main(["report", *map(str, dirs), "-o", str(out), "--title", "robustlab quickstart"])
    if rc == 0:
        _say(f"done: open {out}")
    return rc
