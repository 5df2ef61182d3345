"""``robustlab eval``: load a model (or a training run) and report clean accuracy and, with
``--attack``, robust accuracy with a per-attack breakdown, per-sample records, an eps sweep
and gradient-masking sanity checks, written to a run directory."""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from robustlab.errors import RobustlabError

_LAYER_NORMS = ("bn", "gn", "none")
_THREAT_NORMS = ("linf", "l2", "l1")


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
    p.add_argument("--n", type=int, default=None, help="evaluate the first N test images")
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
        help="threat-model norm for --attack: linf (default), l2, l1 (bn/gn/none are "
        "still accepted as --norm-layer, the old meaning)",
    )
    p.add_argument(
        "--norm-layer",
        choices=list(_LAYER_NORMS),
        default=None,
        help="normalization layers of the architecture (default: its own)",
    )
    p.add_argument("--act", choices=["relu", "silu"], default="relu")
    p.add_argument(
        "--model-kw",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra architecture option, e.g. depth=34 (repeatable)",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    g = p.add_argument_group("attack")
    g.add_argument(
        "--attack",
        default=None,
        help="attack or preset: fgsm, pgd, apgd-ce, apgd-dlr, apgd-t, fab, fab-t, "
        "square, autoattack (with --version), autoattack-standard|plus|rand",
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
        help="output folder (default RUN/eval with --run, else runs/eval-<time>)",
    )
    p.add_argument("--out", default=None, help="also write the JSON summary to this file")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


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
    if args.norm is not None and args.norm.lower() in _LAYER_NORMS:
        if norm_layer is not None and norm_layer != args.norm.lower():
            raise RobustlabError("--norm bn/gn/none conflicts with --norm-layer")
        norm_layer = args.norm.lower()  # the old meaning of --norm
    if args.run is not None:
        if args.model or args.weights:
            raise RobustlabError("--run takes the model from the run; drop --model/--weights")
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
    from robustlab.models import create_model, load_checkpoint

    model = create_model(
        args.model,
        dataset=args.dataset,
        norm=norm_layer,
        act=args.act,
        **_model_kw(args.model_kw),
    )
    report = load_checkpoint(model, args.weights, remap=args.remap, key=args.checkpoint_key)
    if report.remapped and not args.json:
        print(f"remapped {len(report.remapped)} keys by position:", file=sys.stderr)
        for old, new in report.remapped.items():
            print(f"  {old} -> {new}", file=sys.stderr)
    return model, args.dataset, {"weights": str(args.weights), "remapped": report.remapped}


def run(args: argparse.Namespace) -> int:
    """Run ``robustlab eval``; returns the exit status."""
    from robustlab.attacks import parse_eps
    from robustlab.data import load_split
    from robustlab.evaluate import default_batch_size, resolve_device
    from robustlab.io import write_json

    if args.batch_size is not None and args.batch_size < 1:
        raise RobustlabError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.n is not None and args.n < 1:
        raise RobustlabError(f"--n must be >= 1, got {args.n}")
    threat_norm = "linf"
    if args.norm is not None and args.norm.lower() not in _LAYER_NORMS:
        threat_norm = args.norm.lower()
        if threat_norm not in _THREAT_NORMS:
            raise RobustlabError(f"unknown norm {args.norm!r}; choose one of {_THREAT_NORMS}")
    attacking = args.attack is not None
    eps_list: list[float] = []
    if attacking:
        if args.eps_sweep is not None:
            eps_list = [parse_eps(e) for e in args.eps_sweep.split(",") if e.strip()]
            if not eps_list:
                raise RobustlabError("--eps-sweep needs at least one eps")
        if args.eps is not None:
            eps = parse_eps(args.eps)
            if eps not in eps_list:
                eps_list = [eps, *eps_list] if not eps_list else eps_list + [eps]
        if not eps_list:
            raise RobustlabError("--attack needs --eps (or --eps-sweep)")
        kw = _attack_kwargs(args)
        attacks = [_make_attack(args.attack, e, threat_norm, args.seed, kw) for e in eps_list]
    else:
        given = [o for o in ("eps", "eps_sweep", "save_adv", "sanity") if getattr(args, o)]
        if given or _attack_kwargs(args):
            raise RobustlabError("attack options need --attack (e.g. --attack pgd --eps 0.3)")

    device = resolve_device(args.device)
    model, dataset, source = _load(args)
    split = load_split(dataset, "test", root=args.data_dir)
    total = len(split)
    n = total if args.n is None else args.n
    if n > total:
        raise RobustlabError(f"--n {n} is larger than the {dataset} test split ({total} images)")
    x, y = split.images[:n], split.labels[:n]
    bs = args.batch_size or default_batch_size(device)
    if not attacking:
        return _clean_only(args, model, dataset, source, x, y, bs, device)

    from robustlab.evaluate import robust_evaluate

    run_dir = _run_dir(args)
    model.to(device)
    results = []
    for eps, attack in zip(eps_list, attacks, strict=True):
        if not args.quiet and len(eps_list) > 1:
            print(f"eps {eps:.6g}:", file=sys.stderr)
        keep = args.save_adv is not None and eps == eps_list[-1]
        results.append(
            robust_evaluate(
                model,
                x,
                y,
                attack,
                bs,
                device,
                progress=not args.quiet,
                keep_adv=keep,
                name=args.attack.lower(),
            )
        )
    main = results[-1] if args.eps is None else results[eps_list.index(parse_eps(args.eps))]
    sanity = (
        args.sanity if args.sanity is not None else args.attack.lower().startswith("autoattack")
    )
    checks: list[dict[str, Any]] = []
    if sanity:
        checks = _sanity(args, model, x, y, main, results, eps_list, threat_norm, device)
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
    if len(eps_list) > 1:
        summary["eps_sweep"] = [
            {"eps": r.eps, "robust_accuracy": r.robust_accuracy, "per_attack": r.per_attack}
            for r in results
        ]
    if sanity:
        summary["sanity_checks"] = checks
        summary["warnings"] = [c["name"] for c in checks if not c["passed"]]
    write_json(run_dir / "summary.json", summary)
    _write_records(run_dir / "samples.jsonl", main.records)
    if args.save_adv:
        _save_adv(args.save_adv, main, y)
        summary["save_adv"] = str(args.save_adv)
    if args.out:
        write_json(args.out, summary)
    if args.json:
        print(json.dumps(summary, default=str))
    else:
        _print_text(summary, results, eps_list, checks)
    return 0


def _clean_only(args, model, dataset, source, x, y, bs, device) -> int:  # noqa: ANN001
    from robustlab.evaluate import clean_accuracy
    from robustlab.io import write_json

    n = int(x.shape[0])
    t0 = time.perf_counter()
    acc = clean_accuracy(model, x, y, bs, device, progress=not args.quiet)
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


def _run_dir(args: argparse.Namespace) -> Path:
    if args.run_dir:
        return Path(args.run_dir)
    if args.run:
        return Path(args.run) / "eval"
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"eval-{stamp}"
    out, i = base, 1
    while out.exists():
        out = Path(f"{base}-{i}")
        i += 1
    return out


def _sanity(args, model, x, y, main, results, eps_list, norm, device) -> list[dict[str, Any]]:  # noqa: ANN001
    import torch

    from robustlab.attacks import attack_mode
    from robustlab.attacks.checks import run_sanity_checks

    eps = main.eps
    xs = x[:64].to(device)
    xs = xs.float() / 255.0 if xs.dtype == torch.uint8 else xs.float()
    sweep = None
    if len(results) > 1:
        sweep = ([r.eps for r in results], [r.robust_accuracy for r in results])
    with attack_mode(model):
        checks = run_sanity_checks(
            model,
            xs,
            y[:64].to(device),
            eps,
            norm,
            per_attack=main.per_attack,
            n_total=main.n,
            sweep=sweep,
            seed=args.seed,
        )
    return [c.as_dict() for c in checks]


def _write_records(path: Path, records: list[dict[str, Any]]) -> None:
    from robustlab.io import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def _save_adv(path: str, res: Any, y: Any) -> None:
    import torch

    from robustlab.io import atomic_torch_save

    atomic_torch_save(
        {
            "x_adv": res.x_adv,
            "labels": y.long().cpu(),
            "robust_correct": torch.tensor([r["robust_correct"] for r in res.records]),
            "attack": res.attack,
            "eps": res.eps,
            "norm": res.norm,
        },
        path,
    )


def _print_text(summary: dict[str, Any], results, eps_list, checks) -> None:  # noqa: ANN001
    n = summary["n"]
    print(
        f"{summary['attack']} ({summary['norm']}, eps {summary['eps']:.6g}) on "
        f"{summary['dataset']} test, {n} images [{summary['seconds']:.1f}s on {summary['device']}]"
    )
    for what in ("clean", "robust"):
        acc, correct = summary[f"{what}_accuracy"], summary[f"{what}_correct"]
        print(f"  {what} accuracy{' ' * (7 - len(what))}{100 * acc:6.2f}%  ({correct}/{n})")
    for p in summary["per_attack"]:
        print(
            f"    after {p['attack']:<12} {100 * p['robust_accuracy_after']:6.2f}%  "
            f"(broke {p['broken']} of {p['attacked']}, {p['seconds']:.1f}s)"
        )
    if summary.get("skipped_attacks"):
        print(f"  skipped (not available): {summary['skipped_attacks']}")
    if len(eps_list) > 1:
        print("  eps sweep:")
        for r in results:
            print(f"    eps {r.eps:<10.6g} robust accuracy {100 * r.robust_accuracy:6.2f}%")
    for c in checks:
        if not c["passed"]:
            print(f"  WARNING [{c['name']}] {c['message']}")
    if checks and all(c["passed"] for c in checks):
        print(f"  sanity checks: all {len(checks)} passed")
    print(f"  written to {summary['run_dir']}")
