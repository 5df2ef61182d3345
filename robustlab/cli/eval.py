"""``robustlab eval``: load a model (or a training run) and report clean accuracy and, with
``--attack``, robust accuracy with a per-attack breakdown, per-sample records, an eps sweep
and gradient-masking sanity checks, written to a run directory."""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from pathlib import Path
from typing import Any

from robustlab.errors import RobustlabError

_LAYER_NORMS = ("bn", "gn", "none")
_THREAT_NORMS = ("linf", "l2", "l1")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``eval`` subcommand."""
    p = subparsers.add_parser(
        "eval",
        help="evaluate a model's clean and robust accuracy on a dataset's test split",
        description="Load --weights into --model (or a training run with --run) and report "
        "clean accuracy on the test split of --dataset (the first --n images); with --attack, "
        "robust accuracy under any attack or AutoAttack preset, written to --run-dir.",
    )
    p.add_argument("--model", default=None, help="architecture name (see robustlab.models)")
    p.add_argument(
        "--weights", default=None, help="weights file: a torch state dict (.pt) or .safetensors"
    )
    p.add_argument("--dataset", default=None, help="dataset name, e.g. mnist, cifar10")
    p.add_argument(
        "--run",
        default=None,
        metavar="RUN_DIR",
        help="evaluate a training run's checkpoint (RUN/checkpoints/best.pt)",
    )
    p.add_argument(
        "--which",
        choices=["best", "last", "ema"],
        default="best",
        help="with --run: which weights (default best)",
    )
    p.add_argument("--data-dir", default=None, help="data root (default: $ROBUSTLAB_DATA/cache)")
    p.add_argument(
        "--n",
        "--num-images",
        dest="n",
        type=int,
        default=None,
        help="evaluate the first N test images (--num-images under torchrun)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="images per batch (default 128 on CPU, 1024 on GPU)",
    )
    p.add_argument(
        "--remap",
        choices=["none", "auto"],
        default="none",
        help="auto: load by tensor order when key names differ",
    )
    p.add_argument(
        "--checkpoint-key",
        default=None,
        help="entry of the checkpoint holding the weights (e.g. ema)",
    )
    p.add_argument(
        "--norm",
        default=None,
        metavar="NORM",
        help="threat-model norm for --attack: linf (default), l2, l1 (normalization layers: "
        "--norm-layer)",
    )
    p.add_argument(
        "--norm-layer",
        choices=list(_LAYER_NORMS),
        default=None,
        help="normalization layers of the architecture (default: its own)",
    )
    _add_architecture_options(p)
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    _add_attack_options(p.add_argument_group("attack"))
    p.add_argument("--out", default=None, help="also write the JSON summary to this file")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _add_architecture_options(p: argparse.ArgumentParser) -> None:
    from robustlab.cli.third_party import add_input_norm_option

    p.add_argument(
        "--act", choices=["relu", "silu"], default="relu", help="activation (default relu)"
    )
    add_input_norm_option(p)
    p.add_argument(
        "--model-kw",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra architecture option, e.g. depth=34 (repeatable)",
    )


def _add_attack_options(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        "--attack",
        default=None,
        help="attack or preset: fgsm, pgd, apgd-ce, apgd-dlr, apgd-t, fab, fab-t, "
        "square, autoattack (with --version), autoattack-standard|plus|rand; or an ensemble "
        "A+B+... with per-attack options, e.g. pgd:loss=ce+pgd:loss=margin+apgd-t (per-sample "
        "worst case and a per-attack breakdown)",
    )
    g.add_argument("--eps", default=None, help="perturbation budget, e.g. 8/255 or 0.3")
    g.add_argument(
        "--eps-sweep",
        default=None,
        metavar="E1,E2,...",
        help="robust accuracy at each eps (comma separated, e.g. 0.1,0.2,0.3)",
    )
    g.add_argument(
        "--version",
        dest="aa_version",
        choices=["standard", "plus", "rand"],
        default=None,
        help="AutoAttack version (with --attack autoattack)",
    )
    g.add_argument("--steps", type=int, default=None, help="iterations of the attack")
    g.add_argument("--step-size", default=None, help="step size (PGD/FGSM), e.g. 0.01 or 2/255")
    g.add_argument("--loss", default=None, help="attack loss: ce, margin (cw), dlr")
    g.add_argument("--restarts", type=int, default=None, help="random restarts")
    g.add_argument("--targeted", action="store_true", default=None, help="targeted attack")
    g.add_argument(
        "--target",
        default=None,
        help="target for --targeted: runner-up, least-likely, random or a class",
    )
    g.add_argument(
        "--random-start",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="start from a random point of the ball (PGD/FGSM)",
    )
    g.add_argument("--schedule", default=None, help="PGD step-size schedule")
    g.add_argument("--n-targets", type=int, default=None, help="target classes (apgd-t)")
    g.add_argument("--eot-iter", type=int, default=None, help="EOT iterations (APGD)")
    g.add_argument("--n-queries", type=int, default=None, help="query budget (square)")
    g.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    g.add_argument(
        "--precision",
        default=None,
        metavar="{float32,bf16,auto}",
        help="model passes inside the attack (apgd, fab, square, autoattack, fast; default "
        "float32): bf16 is 0.4-0.6x the time on CPUs with AMX and on GPUs, every success "
        "confirmed in float32, a different search path; auto: bf16 where native",
    )
    g.add_argument(
        "--sanity",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="gradient-masking checks (default: on after AutoAttack)",
    )
    g.add_argument(
        "--save-adv",
        default=None,
        metavar="FILE",
        help="save adversarial images, labels and indices (.pt)",
    )
    g.add_argument(
        "--run-dir",
        default=None,
        metavar="DIR",
        help="output folder (default with --run: RUN/eval/<attack>-<norm>-eps<eps>-n<n>-"
        "seed<seed>, else runs/eval-<time>); one that holds an evaluation is refused",
    )


def _attack_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    from robustlab.attacks import parse_eps

    kw: dict[str, Any] = {}
    simple = {
        "steps": args.steps,
        "loss": args.loss,
        "restarts": args.restarts,
        "targeted": args.targeted,
        "random_start": args.random_start,
        "schedule": args.schedule,
        "n_targets": args.n_targets,
        "eot_iter": args.eot_iter,
        "n_queries": args.n_queries,
        "precision": args.precision,
    }
    kw.update({k: v for k, v in simple.items() if v is not None})
    if args.step_size is not None:
        kw["step_size"] = parse_eps(args.step_size)
    if args.target is not None:
        kw["target"] = int(args.target) if args.target.lstrip("-").isdigit() else args.target
    if args.aa_version is not None:
        kw["version"] = args.aa_version
    return kw


def _option(key: str) -> str:
    return "--" + {"aa_version": "version"}.get(key, key).replace("_", "-")


def _make_attack(name: str, eps: float, norm: str, seed: int, kw: dict[str, Any]) -> Any:
    """Create the attack, turning options the attack does not take into a clear error."""
    from robustlab.attacks import available_attacks, create_attack
    from robustlab.attacks.base import _ATTACKS

    key = name.lower()
    if key not in available_attacks():
        raise RobustlabError(f"unknown attack {name!r}; choose one of {available_attacks()}")
    if "version" in kw and not key.startswith("autoattack"):
        raise RobustlabError("--version applies to --attack autoattack only")
    if key.startswith("autoattack-") and "version" in kw:
        raise RobustlabError(f"--attack {key} fixes the version; use --attack autoattack")
    target = _ATTACKS[key]
    params = inspect.signature(target).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    if not takes_any:
        extra = [k for k in kw if k not in params]
        if extra:
            opts = ", ".join(_option(k) for k in extra)
            raise RobustlabError(f"attack {key} does not take {opts}")
    try:
        return create_attack(key, eps=eps, norm=norm, seed=seed, **kw)
    except TypeError as e:
        if "unexpected keyword argument" in str(e):
            bad = str(e).split("'")[-2] if "'" in str(e) else str(e)
            raise RobustlabError(f"attack {key} does not take {_option(bad)}") from None
        raise


def _load(args: argparse.Namespace) -> tuple[Any, str, dict[str, Any]]:
    """The model, the dataset name and a description of where the weights came from."""
    norm_layer = args.norm_layer
    if args.run is not None:
        if args.model or args.weights or args.input_norm:
            raise RobustlabError(
                "--run takes the model (and its input normalization) from the run; drop "
                "--model/--weights/--input-norm"
            )
        from robustlab.train.checkpoint import load_run_model

        if not Path(args.run).is_dir():
            raise RobustlabError(f"--run {args.run}: no such run directory")
        model, cfg = load_run_model(args.run, which=args.which)
        dataset = args.dataset or cfg.data.dataset
        if args.data_dir is None and cfg.data.data_dir:
            args.data_dir = cfg.data.data_dir
        return model, dataset, {"run": str(args.run), "which": args.which}
    missing = [o for o, v in (("--model", args.model), ("--weights", args.weights)) if not v]
    missing += ["--dataset"] if not args.dataset else []
    if missing:
        raise RobustlabError(f"give {', '.join(missing)} (or --run RUN_DIR)")
    from robustlab.cli.third_party import load_with_warning, model_kw
    from robustlab.models import create_model, load_checkpoint

    model = create_model(
        args.model,
        dataset=args.dataset,
        norm=norm_layer,
        act=args.act,
        input_norm=args.input_norm,
        **model_kw(args.model_kw),
    )
    report, _ = load_with_warning(
        lambda: load_checkpoint(model, args.weights, remap=args.remap, key=args.checkpoint_key),
        quiet=args.json,
    )
    if report.remapped and not args.json:
        print(f"remapped {len(report.remapped)} keys by position:", file=sys.stderr)
        for old, new in report.remapped.items():
            print(f"  {old} -> {new}", file=sys.stderr)
    source = {"weights": str(args.weights), "remapped": report.remapped}
    if report.warning:
        source["load_warning"] = report.warning
    return model, args.dataset, source


def run(args: argparse.Namespace) -> int:
    """Run ``robustlab eval``; returns the exit status."""
    from robustlab.data import load_split
    from robustlab.evaluate import default_batch_size, eps_sweep, resolve_device

    if args.batch_size is not None and args.batch_size < 1:
        raise RobustlabError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.n is not None and args.n < 1:
        raise RobustlabError(f"--n must be >= 1, got {args.n}")
    threat_norm = _threat_norm(args.norm)
    attacking = args.attack is not None
    eps_list, attacks, main_eps = _plan_attacks(args, threat_norm)

    from robustlab.cli import eval_dist

    dist_info = eval_dist.distributed(args.device)
    device = dist_info.device if dist_info else resolve_device(args.device)
    if dist_info and not dist_info.is_main:
        args.quiet = True
    model, dataset, source = _load(args)
    from robustlab.models import describe_input_norm, input_normalization

    source["input_normalization"] = input_normalization(model)
    split = load_split(dataset, "test", root=args.data_dir)
    total = len(split)
    n = total if args.n is None else args.n
    if n > total:
        raise RobustlabError(f"--n {n} is larger than the {dataset} test split ({total} images)")
    x, y = split.images[:n], split.labels[:n]
    if not args.json and (dist_info is None or dist_info.is_main):
        print(describe_input_norm(model))  # after the input checks: errors print one line only
    bs = args.batch_size or default_batch_size(device)
    if not attacking:
        if dist_info and not dist_info.is_main:
            return 0
        if args.out:
            from robustlab.io import check_writable

            check_writable(args.out, "--out")
        return _clean_only(args, model, dataset, source, x, y, bs, device)

    sharding = eval_dist.sharding(dist_info) if dist_info else None
    from robustlab.cli.eval_output import (
        attack_settings,
        check_outputs,
        eval_name,
        eval_run_dir,
    )

    run_dir = eval_run_dir(
        args, eval_name(args.attack, threat_norm, main_eps, n, args.seed, len(eps_list))
    )
    if dist_info is None or dist_info.is_main:
        check_outputs(args, run_dir)  # before the expensive part: nothing lost after it
    run_dir = eval_dist.shared_run_dir(run_dir) if dist_info else run_dir
    source["attack_settings"] = attack_settings(attacks[eps_list.index(main_eps)])
    model.to(device)
    results = eps_sweep(
        model,
        x,
        y,
        dict(zip(eps_list, attacks, strict=True)),
        eps_list,
        batch_size=bs,
        device=device,
        progress=not args.quiet and sys.stderr.isatty(),
        keep_adv_at=main_eps if args.save_adv is not None else None,
        name=args.attack.lower(),
        sharding=sharding,
    )
    if dist_info and not dist_info.is_main:
        return 0  # rank 0 alone checks, writes and prints
    main = results[eps_list.index(main_eps)]
    return _finish(args, model, x, y, results, main, threat_norm, device, dataset, source, run_dir)


def _finish(args, model, x, y, results, main, norm, device, dataset, source, run_dir) -> int:  # noqa: ANN001, E501
    """Sanity checks, then the summary and per-sample records written, and printed."""
    from robustlab.cli.eval_output import (
        print_text,
        sanity_checks,
        save_adv,
        write_eval_index,
        write_records,
    )
    from robustlab.evaluate import sweep_summary
    from robustlab.io import write_json
    from robustlab.train.rundir import EvalDir

    out = EvalDir(run_dir)
    sanity = (
        args.sanity if args.sanity is not None else args.attack.lower().startswith("autoattack")
    )
    checks: list[dict[str, Any]] = []
    if sanity:
        checks = sanity_checks(model, x, y, main, results, norm, device, args.seed)
    summary = {
        **main.summary(),
        "model": args.model,
        "dataset": dataset,
        "split": "test",
        "device": str(device),
        "seed": args.seed,
        "attack_options": {k: v for k, v in _attack_kwargs(args).items()},
        **source,
        "run_dir": str(run_dir),
    }
    if len(results) > 1:
        summary["eps_sweep"] = sweep_summary(results)
    if sanity:
        summary["sanity_checks"] = checks
        summary["warnings"] = [c["name"] for c in checks if not c["passed"]]
    if args.save_adv:
        summary["save_adv"] = str(args.save_adv)
    write_records(out.samples, main.records)
    if args.save_adv:
        save_adv(args.save_adv, main, y)
    write_json(out.summary, summary)  # last: an evaluation is complete when it exists
    if args.run and not args.run_dir:
        write_eval_index(args.run)
    if args.out:
        write_json(args.out, summary)
    if args.json:
        print(json.dumps(summary, default=str))
    else:
        print_text(summary, results, checks)
    return 0


def _clean_only(args, model, dataset, source, x, y, bs, device) -> int:  # noqa: ANN001
    from robustlab.evaluate import clean_accuracy
    from robustlab.io import write_json

    n = int(x.shape[0])
    t0 = time.perf_counter()
    acc = clean_accuracy(model, x, y, bs, device, progress=not args.quiet and sys.stderr.isatty())
    seconds = time.perf_counter() - t0
    result = {
        "model": args.model,
        **source,
        "dataset": dataset,
        "split": "test",
        "n": n,
        "correct": round(acc * n),
        "clean_accuracy": acc,
        "device": str(device),
        "seconds": round(seconds, 3),
    }
    result.setdefault("remapped", {})
    if args.out:
        write_json(args.out, result)
    if args.json:
        print(json.dumps(result))
    else:
        name = args.model or f"run {args.run}"
        print(
            f"{name} on {dataset} test ({n} images): clean accuracy "
            f"{100 * acc:.2f}% ({result['correct']}/{n}) [{seconds:.1f}s on {device}]"
        )
    return 0


def _plan_attacks(args: argparse.Namespace, norm: str) -> tuple[list[float], list[Any], float]:
    """The eps values (``--eps`` and ``--eps-sweep``), one attack per eps, and the main eps;
    attack options without ``--attack`` are an error."""
    from robustlab.attacks import parse_eps
    from robustlab.evaluate import sweep_values

    if args.attack is None:
        given = [o for o in ("eps", "eps_sweep", "save_adv", "sanity") if getattr(args, o)]
        if given or _attack_kwargs(args):
            raise RobustlabError("attack options need --attack (e.g. --attack pgd --eps 0.3)")
        return [], [], 0.0
    main_eps = parse_eps(args.eps) if args.eps is not None else None
    sweep = None
    if args.eps_sweep is not None:
        sweep = [parse_eps(e) for e in args.eps_sweep.split(",") if e.strip()]
    eps_list = sweep_values(main_eps, sweep)
    from robustlab.attacks.threat import check_eps_scale

    for e, option in [(main_eps, "--eps"), *[(v, "--eps-sweep value") for v in sweep or []]]:
        if e is not None:
            check_eps_scale(e, norm, option)
    kw = _attack_kwargs(args)
    from robustlab.cli.attack_spec import build_attack

    attacks = [build_attack(args.attack, e, norm, args.seed, kw, _make_attack) for e in eps_list]
    return eps_list, attacks, eps_list[-1] if main_eps is None else main_eps


def _threat_norm(norm: str | None) -> str:
    """``--norm`` is the threat model's norm; its old meaning (layers) points to --norm-layer."""
    if norm is None:
        return "linf"
    key = norm.lower()
    if key in _LAYER_NORMS:
        raise RobustlabError(
            f"--norm {norm} is not a threat-model norm; --norm chooses linf, l2 or l1 for "
            f"--attack. For the architecture's normalization layers write --norm-layer {key}"
        )
    if key not in _THREAT_NORMS:
        raise RobustlabError(f"unknown norm {norm!r}; choose one of {_THREAT_NORMS}")
    return key
