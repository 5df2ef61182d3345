"""Execute a reproduction plan: train the missing runs (reusing finished ones, resuming killed
ones), evaluate every model under the protocol, then build the claims, figures and files.

Independent runs go to a standard executor: inline (``--jobs 1``), a
``concurrent.futures.ProcessPoolExecutor`` (``--jobs N``, local) or submitit
(``--launcher slurm``; submitit's local executor in tests). Runs are grouped in waves so that
a run starts only once the runs it needs are complete; nothing else is scheduled here.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustlab.errors import RobustlabError
from robustlab.io import append_jsonl
from robustlab.reproduce.plan import Paper, PlanContext, RunSpec, stages
from robustlab.reproduce.protocol import Protocol, evaluate_run, load_eval
from robustlab.train.rundir import RunDir

__all__ = ["EvalTarget", "Results", "train_job", "eval_job", "execute_runs", "execute_evals"]

LOG = "reproduce.jsonl"


@dataclass(frozen=True)
class EvalTarget:
    """A model to evaluate: a planned run (``key``) or a paper's external model
    (``external``, loaded by ``Paper.load_external``), under ``protocol``."""

    key: str
    protocol: Protocol
    external: str | None = None
    paper: str = ""

    def out_dir(self, ctx: PlanContext) -> Path:
        return ctx.root / "external" / self.key if self.external else ctx.run_dir(self.key)


@dataclass
class Results:
    """Read access to the finished evaluations for a paper's claims and figures."""

    ctx: PlanContext
    targets: dict[str, EvalTarget]
    cache: dict[str, tuple[dict, dict]] = field(default_factory=dict)

    def eval(self, key: str) -> tuple[dict, dict]:
        """``(summary, per-sample arrays)`` of target ``key``."""
        if key not in self.cache:
            t = self.targets[key]
            got = load_eval(RunDir(t.out_dir(self.ctx)).eval.root, t.protocol)
            if got is None:
                raise RobustlabError(f"no evaluation of {key} (the plan did not finish)")
            self.cache[key] = got
        return self.cache[key]

    def arrays(self, key: str) -> dict:
        return self.eval(key)[1]

    def summary(self, key: str) -> dict:
        return self.eval(key)[0]

    def run_summary(self, key: str) -> dict[str, Any]:
        import json

        return json.loads(RunDir(self.ctx.run_dir(key)).summary.read_text(encoding="utf-8"))


def train_job(recipe: str, overrides: Sequence[str], run_dir: str) -> str:
    """Train (or resume, or reuse) one run; the unit of work sent to an executor."""
    from robustlab.api import train  # composes the run (callbacks by name)
    from robustlab.config import load_config

    cfg = load_config(recipe, list(overrides))
    return str(train(cfg, run_dir, resume=True))


def eval_job(target: EvalTarget, out_dir: str) -> str:
    """Evaluate one model under its protocol (cached in ``out_dir/eval``)."""
    model = None
    if target.external:
        from robustlab.reproduce.plan import get_paper

        model = get_paper(target.paper).load_external(target.external)  # type: ignore[attr-defined]
    evaluate_run(out_dir, target.protocol, model=model)
    return out_dir


def _timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float, float]:
    """``fn(*args)`` with its own wall and CPU seconds (measured where the job runs)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - t0, time.process_time() - c0


def _make_executor(
    launcher: str, jobs: int, folder: Path, cluster: str | None, params: dict[str, Any]
) -> Any:
    if launcher == "local":
        if jobs <= 1:
            return None
        return cf.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))
    try:
        import submitit
    except ImportError:
        raise RobustlabError("--launcher slurm needs submitit (pip install submitit)") from None
    ex = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    ex.update_parameters(**{"timeout_min": 240, "slurm_array_parallelism": max(jobs, 1), **params})
    return ex


def _run_all(
    calls: list[tuple[str, Callable[..., Any], tuple]],
    ctx: PlanContext,
    launcher: str,
    jobs: int,
    log: Callable[[dict], None],
) -> dict[str, str]:
    """Run ``(label, fn, args)`` calls with the chosen executor; returns ``{label: error}``
    for the calls that failed (a user error or a diverged run does not stop the others)."""
    if not calls:
        return {}
    ex = _make_executor(
        launcher,
        jobs,
        ctx.root / "submitit",
        ctx.options.get("cluster"),
        ctx.options.get("slurm", {}),
    )
    failures: dict[str, str] = {}

    def failed(label: str, e: BaseException) -> None:
        failures[label] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        log({"event": "failed", "what": label, "error": failures[label]})

    if ex is None:
        for label, fn, args in calls:
            log({"event": "start", "what": label})
            try:
                _, wall, cpu = _timed(fn, *args)
            except RobustlabError as e:
                failed(label, e)
                continue
            log(
                {
                    "event": "done",
                    "what": label,
                    "seconds": round(wall, 1),
                    "cpu_seconds": round(cpu, 1),
                }
            )
        return failures
    futures = {}
    for label, fn, args in calls:
        log({"event": "submit", "what": label})
        futures[label] = ex.submit(_timed, fn, *args)
    for label, fut in futures.items():
        try:
            _, wall, cpu = fut.result()
            log(
                {
                    "event": "done",
                    "what": label,
                    "seconds": round(wall, 1),
                    "cpu_seconds": round(cpu, 1),
                }
            )
        except Exception as e:  # a job's error, pickled back by the executor
            failed(label, e)
    if isinstance(ex, cf.Executor):
        ex.shutdown()
    return failures


def _logger(ctx: PlanContext, echo: bool) -> Callable[[dict], None]:
    def log(rec: dict) -> None:
        rec = {"time": round(time.time(), 1)} | rec
        append_jsonl(ctx.root / LOG, rec)
        if echo:
            extra = f" ({rec['seconds']} s, CPU {rec['cpu_seconds']} s)" if "seconds" in rec else ""
            print(f"reproduce: {rec['event']} {rec.get('what', '')}{extra}", flush=True)

    return log


def execute_runs(
    specs: list[RunSpec], ctx: PlanContext, launcher: str, jobs: int, echo: bool = True
) -> dict[str, str]:
    """Train every planned run wave by wave; returns ``{key: status}`` with status
    ``reused``, ``trained``, ``failed: <error>`` or ``skipped`` (a run it needs failed)."""
    from robustlab.train import is_complete

    log = _logger(ctx, echo)
    status: dict[str, str] = {}
    for wave in stages(specs):
        calls = []
        for s in wave:
            rd = ctx.run_dir(s.key)
            if any(status.get(n, "").startswith(("failed", "skipped")) for n in s.needs):
                status[s.key] = "skipped"
                log({"event": "skip", "what": s.key})
                continue
            stale = _stale(s, rd) if is_complete(rd) else ""
            if stale:
                status[s.key] = f"failed: {stale}"
                log({"event": "failed", "what": s.key, "error": status[s.key]})
                continue
            if is_complete(rd):
                status[s.key] = "reused"
                log({"event": "reuse", "what": s.key})
                continue
            status[s.key] = "trained"
            calls.append((s.key, train_job, (str(s.recipe_path()), list(s.overrides), str(rd))))
        for key, err in _run_all(calls, ctx, launcher, jobs, log).items():
            status[key] = f"failed: {err}"
    return status


def _stale(spec: RunSpec, run_dir: Path) -> str:
    """Why a finished run directory cannot be reused for ``spec`` ('' if it can): its stored
    configuration must equal the planned one (up to progress/device/logging keys)."""
    from robustlab.config import RESUMABLE_DIFFS, config_diff, load_config
    from robustlab.train import read_run_config

    diff = config_diff(
        read_run_config(run_dir),
        load_config(spec.recipe_path(), list(spec.overrides)),
        RESUMABLE_DIFFS,
    )
    if not diff:
        return ""
    shown = ", ".join(f"{k} ({a!r} -> {b!r})" for k, (a, b) in list(diff.items())[:3])
    return (
        f"{run_dir} holds a finished run with other settings: {shown}; "
        "remove it or use another --run-dir"
    )


def execute_evals(
    targets: list[EvalTarget], ctx: PlanContext, launcher: str, jobs: int, echo: bool = True
) -> dict[str, str]:
    """Evaluate every target not evaluated yet under its protocol (runs that are not complete
    are left out); returns ``{label: error}`` for the evaluations that failed."""
    from robustlab.train import is_complete

    log = _logger(ctx, echo)
    calls = []
    for t in targets:
        out = t.out_dir(ctx)
        if load_eval(RunDir(out).eval.root, t.protocol) is not None:
            continue
        if not t.external and not is_complete(out):
            continue
        calls.append((f"eval {t.key}", eval_job, (t, str(out))))
    return _run_all(calls, ctx, launcher, jobs, log)


def paper_targets(paper: Paper, ctx: PlanContext) -> list[EvalTarget]:
    """The paper's evaluation targets (``Paper.evaluations``), each tagged with the paper."""
    out = []
    for t in paper.evaluations(ctx):  # type: ignore[attr-defined]
        out.append(EvalTarget(t.key, t.protocol, t.external, paper.name))
    return out
