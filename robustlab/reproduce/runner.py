"""``reproduce(...)``: check the request, lay out the plan, print it (``dry_run``) or execute it
and write the claims, figures and report. Every check runs before anything is written."""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from robustlab.io import write_json
from robustlab.reproduce.engine import (
    EvalTarget,
    Results,
    execute_evals,
    execute_runs,
    paper_targets,
)
from robustlab.reproduce.outputs import machine_info, write_merged_outputs, write_paper_outputs
from robustlab.reproduce.plan import (
    ALL_SCALES,
    SCALES,
    Paper,
    PlanContext,
    ReproduceError,
    RunSpec,
    merge_runs,
    resolve_papers,
)

__all__ = [
    "reproduce",
    "parse_seeds",
    "parse_slurm_params",
    "check_run_root",
    "check_datasets",
    "plan_text",
]

LAUNCHERS = ("local", "slurm")


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; anything but distinct non-negative integers is an error."""
    items = [t.strip() for t in str(text).split(",")]
    try:
        seeds = [int(t) for t in items]
    except ValueError:
        raise ReproduceError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds) or not seeds:
        raise ReproduceError(f"--seeds must be distinct non-negative integers, got {text!r}")
    return seeds


def parse_slurm_params(items: list[str] | None) -> dict[str, int | str]:
    """``["slurm_partition=gpu", "gpus_per_node=1"]`` -> submitit executor parameters
    (integers where the value is one). Bad items are an error before any work."""
    out: dict[str, int | str] = {}
    for item in items or []:
        key, sep, value = str(item).partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key.isidentifier() or not value:
            raise ReproduceError(f"--slurm takes KEY=VALUE (e.g. gpus_per_node=1), got {item!r}")
        out[key] = int(value) if value.lstrip("-").isdigit() else value
    return out


def check_run_root(path: Path) -> None:
    """The run root must be (or be creatable as) a writable directory; nothing is created."""
    p = path.resolve()
    if p.exists():
        if not p.is_dir():
            raise ReproduceError(f"run directory {path} exists and is not a directory")
        if not os.access(p, os.W_OK | os.X_OK):
            raise ReproduceError(f"run directory {path} is not writable")
        return
    parent = p.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ReproduceError(f"run directory {path} cannot be created ({parent} is not writable)")


def check_datasets(specs: list[RunSpec]) -> None:
    """Every dataset the plan trains on must be on disk before the first run starts (a missing
    one would otherwise fail every run, one after another, after the plan was written)."""
    from robustlab.config import load_config
    from robustlab.data.datasets import locate_dataset
    from robustlab.errors import RobustlabError

    seen: set[tuple[str, str | None]] = set()
    for s in specs:
        data = load_config(s.recipe_path(), list(s.overrides), check=False).data
        key = (data.dataset, data.data_dir)
        if key in seen:
            continue
        seen.add(key)
        try:
            locate_dataset(data.dataset, data.data_dir)
        except RobustlabError as e:
            raise ReproduceError(f"run {s.key} needs data: {e}") from None


def _dedupe(targets: list[EvalTarget], ctx: PlanContext) -> list[EvalTarget]:
    seen: set[tuple[str, str]] = set()
    out = []
    for t in targets:
        k = (str(t.out_dir(ctx)), t.protocol.key())
        if k not in seen:
            seen.add(k)
            out.append(t)
    return out


def plan_text(specs: list[RunSpec], papers: list[Paper], ctx: PlanContext, jobs: int) -> str:
    """The plan as printed by ``--dry-run``: every run, its status and estimated cost."""
    from robustlab.train import is_complete

    lines = [
        f"plan for {', '.join(p.name for p in papers)} at scale {ctx.scale}, "
        f"seeds {ctx.seeds}, under {ctx.root}:"
    ]
    todo = 0.0
    common = set.intersection(*(set(s.overrides) for s in specs)) if specs else set()
    if common:
        lines.append("  every run: " + " ".join(o for o in specs[0].overrides if o in common))
    for s in specs:
        rd = ctx.run_dir(s.key)
        state = "done" if is_complete(rd) else ("partial" if rd.is_dir() else "new")
        if state != "done":
            todo += s.cost
        over = " ".join(o for o in s.overrides if o not in common and not o.startswith("name="))
        needs = f" (after {', '.join(s.needs)})" if s.needs else ""
        lines.append(f"  [{state:7s}] {s.key}: {s.recipe} {over}{needs}  ~{s.cost:.0f} s")
    ev = sum(p.eval_cost(ctx) for p in papers)
    total = (todo + ev) / max(1, jobs)
    unit = "CPU core" if ctx.scale == "cpu" else "GPU"  # papers' cost tables: GPU seconds there
    lines.append(
        f"{len(specs)} runs ({sum(1 for s in specs if is_complete(ctx.run_dir(s.key)))} done); "
        f"estimated cost: training {todo / 60:.1f} min + evaluation {ev / 60:.1f} min of one "
        f"{unit}, about {total / 60:.1f} min wall with --jobs {jobs} (scale {ctx.scale})"
    )
    return "\n".join(lines)


def reproduce(
    paper: str,
    scale: str = "cpu",
    seeds: list[int] | None = None,
    run_dir: str | Path | None = None,
    jobs: int = 1,
    launcher: str = "local",
    dry_run: bool = False,
    cluster: str | None = None,
    slurm: dict[str, int | str] | None = None,
    echo: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Reproduce ``paper`` (or ``all``); returns ``{paper: [claim dicts]}`` ({} for a dry run).

    ``slurm``: submitit executor parameters for ``launcher="slurm"`` (partition, GPUs per
    node, time limit, ...), on top of the defaults ``timeout_min=240`` and one array slot per
    ``jobs``."""
    if scale not in ALL_SCALES:
        raise ReproduceError(f"unknown scale {scale!r}; choose one of {SCALES}")
    if launcher not in LAUNCHERS:
        raise ReproduceError(f"unknown launcher {launcher!r}; choose one of {LAUNCHERS}")
    if not isinstance(jobs, int) or jobs < 1:
        raise ReproduceError(f"--jobs must be a positive integer, got {jobs!r}")
    if slurm and launcher != "slurm":
        raise ReproduceError("--slurm parameters need --launcher slurm")
    papers = resolve_papers(paper)
    for p in papers:
        p.check_scale(scale)
    seeds = list(seeds) if seeds is not None else [0, 1, 2]
    root = Path(run_dir) if run_dir is not None else Path("runs") / f"reproduce-{scale}"
    check_run_root(root)
    ctx = PlanContext(scale, seeds, root.resolve(), {"cluster": cluster, "slurm": slurm or {}})
    for p in papers:
        p.check_ready(ctx)
    specs = merge_runs(papers, ctx)
    if dry_run:  # a plan can be made where the data is not (a cluster's login node)
        print(plan_text(specs, papers, ctx, jobs))
        return {}
    check_datasets(specs)
    return _execute(papers, specs, ctx, jobs, launcher, echo, command)


def _execute(
    papers: list[Paper],
    specs: list[RunSpec],
    ctx: PlanContext,
    jobs: int,
    launcher: str,
    echo: bool,
    command: str | None,
) -> dict[str, Any]:
    t0, load0, cpu0 = time.time(), _load(), _cpu_seconds()
    ctx.root.mkdir(parents=True, exist_ok=True)
    write_json(
        ctx.root / "plan.json",
        {
            "papers": [p.name for p in papers],
            "scale": ctx.scale,
            "seeds": ctx.seeds,
            "runs": [
                {
                    "key": s.key,
                    "recipe": s.recipe,
                    "overrides": list(s.overrides),
                    "needs": list(s.needs),
                }
                for s in specs
            ],
        },
    )
    status = execute_runs(specs, ctx, launcher, jobs, echo)
    targets = _dedupe([t for p in papers for t in paper_targets(p, ctx)], ctx)
    bad = {k: v for k, v in status.items() if v.startswith(("failed", "skipped"))}
    bad |= execute_evals(targets, ctx, launcher, jobs, echo)
    if bad:
        listed = "; ".join(f"{k}: {v}" for k, v in bad.items())
        raise ReproduceError(
            f"{len(bad)} run(s)/evaluation(s) did not finish, so no claims were written "
            f"(everything else is kept; fix and rerun the same command): {listed}"
        )
    results = Results(ctx, {t.key: t for t in targets})
    cmd = command or "robustlab " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    out: dict[str, Any] = {}
    titles = {}
    for p in papers:
        claims = p.claims(ctx, results)
        figures = p.figures(ctx, results)
        keys = {s.key for s in p.runs(ctx)}
        meta = {
            "paper": p.name,
            "title": p.title,
            "scale": ctx.scale,
            "seeds": ctx.seeds,
            "command": cmd,
            "wall_seconds": round(time.time() - t0, 1),
            "jobs": jobs,
            "launcher": launcher,
            "trained": sum(1 for k in keys if status.get(k) == "trained"),
            "reused": sum(1 for k in keys if status.get(k) == "reused"),
            "cpu_seconds": round(_cpu_seconds() - cpu0, 1),
            "machine": machine_info(),
            "load_start": load0,
            "load_end": _load(),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        }
        write_paper_outputs(ctx.root, p.name, p.title, claims, figures, meta)
        out[p.name] = [c.to_dict() for c in claims]
        titles[p.name] = p.title
    for d in (ctx.root / "results").glob("*"):
        titles.setdefault(d.name, d.name)
    write_merged_outputs(ctx.root, titles)
    if echo:
        for name, claims in out.items():
            print(f"{name}: " + ", ".join(f"{c['id']} {c['verdict']}" for c in claims))
        print(f"reproduce: results in {ctx.root / 'results'}; report {ctx.root / 'report.html'}")
    return out


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished child processes (workers)."""
    import resource

    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _load() -> list[float] | None:
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
