"""What ``robustlab eval`` writes and prints: per-sample records, adversarial images, the
gradient-masking sanity checks and the text summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "sanity_checks",
    "write_records",
    "save_adv",
    "print_text",
    "eval_name",
    "check_outputs",
    "write_eval_index",
    "attack_settings",
    "eval_run_dir",
]


def sanity_checks(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    main: Any,
    results: list[Any],
    norm: str,
    device: torch.device,
    seed: int,
) -> list[dict[str, Any]]:
    """Gradient-masking checks on the first 64 images, as JSON rows."""
    from robustlab.attacks import attack_mode
    from robustlab.attacks.checks import run_sanity_checks
    from robustlab.data.convert import to_float

    eps = main.eps
    xs = to_float(x[:64], device)
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
            seed=seed,
        )
    return [c.as_dict() for c in checks]


def write_records(path: Path, records: list[dict[str, Any]]) -> None:
    from robustlab.io import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def save_adv(path: str, res: Any, y: Any) -> None:
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


def print_text(summary: dict[str, Any], results: list[Any], checks: list[dict[str, Any]]) -> None:
    """The human-readable summary of an evaluation (and of an eps sweep)."""
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
    if len(results) > 1:
        print("  eps sweep:")
        for r in results:
            print(f"    eps {r.eps:<10.6g} robust accuracy {100 * r.robust_accuracy:6.2f}%")
    for c in checks:
        if not c["passed"]:
            print(f"  WARNING [{c['name']}] {c['message']}")
    if checks and all(c["passed"] for c in checks):
        print(f"  sanity checks: all {len(checks)} passed")
    print(f"  written to {summary['run_dir']}")


def write_eval_index(run_dir: str | Path) -> Path:
    """Rewrite ``RUN/eval/index.json``: every evaluation of the run (each ``eval/<name>/`` and
    a ``summary.json`` of older layouts) with attack, norm, eps, n, seed and accuracies."""
    from robustlab.io import write_json
    from robustlab.train.rundir import RunDir

    run = RunDir(run_dir)
    rows = []
    for p in sorted(run.eval.root.glob("*/summary.json")) + sorted(run.eval.root.glob("*.json")):
        if p == run.eval_index:
            continue
        try:
            s = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(s, dict) or "robust_accuracy" not in s:
            continue
        keys = ("attack", "norm", "eps", "n", "seed", "clean_accuracy", "robust_accuracy")
        rows.append({"path": run.relative(p), **{k: s.get(k) for k in keys}})
    write_json(run.eval_index, {"evaluations": rows})
    return run.eval_index


def eval_name(attack: str, norm: str, eps: float, n: int, seed: int, n_eps: int) -> str:
    """``<attack>-<norm>-eps<eps>-n<n>-seed<seed>`` (``-sweep<k>`` with an eps sweep): the
    folder of one evaluation of a run, so that evaluations never replace each other."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in attack.lower())
    sweep = f"-sweep{n_eps}" if n_eps > 1 else ""
    return f"{safe}-{norm}-eps{eps:.4g}-n{n}-seed{seed}{sweep}"


def check_outputs(args: Any, run_dir: Path) -> None:
    """Refuse an evaluation folder that already holds one, and unwritable outputs."""
    from robustlab.errors import RobustlabError
    from robustlab.io import check_writable
    from robustlab.train.rundir import EvalDir

    if EvalDir(run_dir).summary.is_file():
        raise RobustlabError(
            f"{run_dir} already holds an evaluation (summary.json); evaluations are never "
            "replaced: delete that folder to redo it, or choose another --run-dir"
        )
    check_writable(run_dir, "--run-dir", directory=True)
    if args.out:
        check_writable(args.out, "--out")
    if args.save_adv:
        check_writable(args.save_adv, "--save-adv")


def eval_run_dir(args: Any, name: str) -> Path:
    """Where one ``robustlab eval`` writes: --run-dir, else ``RUN/eval/<name>/`` with --run,
    else a new ``runs/eval-<time>``."""
    if args.run_dir:
        return Path(args.run_dir)
    if args.run:  # each evaluation of a run in its own folder: never replaced
        from robustlab.train.rundir import RunDir

        return RunDir(args.run).evaluation(name).root
    from datetime import datetime

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"eval-{stamp}"
    out, i = base, 1
    while out.exists():
        out = Path(f"{base}-{i}")
        i += 1


def attack_settings(attack: Any) -> dict[str, Any]:
    """Every setting of an attack as it ran, defaults included (its simple attributes, the
    threat model, the step size it derives when none was given, and each component of an
    ensemble), for the evaluation's summary."""
    out: dict[str, Any] = {
        k: v
        for k, v in vars(attack).items()
        if not k.startswith("_") and isinstance(v, int | float | str | bool | type(None))
    }
    threat = getattr(attack, "threat", None)
    if threat is not None:
        out["norm"] = threat.name
        eps = threat.eps
        out["eps"] = float(eps) if not isinstance(eps, torch.Tensor) else eps.tolist()
        if out.get("step_size", 0) is None and isinstance(out.get("eps"), float):
            if getattr(attack, "name", "") == "pgd" and isinstance(out.get("steps"), int):
                from robustlab.attacks.pgd import default_step_size

                out["step_size"] = default_step_size(threat, out["steps"])
            elif getattr(attack, "name", "") == "fgsm":
                scale = 1.25 if out.get("random_start") else 1.0  # as robustlab.attacks.fgsm
                out["step_size"] = scale * out["eps"]
    parts = getattr(attack, "attacks", None)
    if isinstance(parts, list) and parts:
        out["components"] = {
            str(p[0]): attack_settings(p[1]) for p in parts if isinstance(p, tuple) and len(p) == 2
        }
    return out
