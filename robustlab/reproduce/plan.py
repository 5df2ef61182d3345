"""The plan of a reproduction: the training runs a paper's claims need, as recipes plus
overrides per seed, and the :class:`Paper` interface each paper module implements.

A paper module (``robustlab/reproduce/papers/<name>.py``) subclasses :class:`Paper`, is
registered with :func:`register_paper` (like objectives) and declares:

- ``runs(ctx)``: the :class:`RunSpec` list (every run an ordinary run directory under
  ``ctx.root/runs/<key>``; a run may name the runs it needs first, e.g. a teacher);
- ``claims(ctx, results)``: the :class:`~robustlab.reproduce.claims.Claim` objects, from the
  evaluations of the finished runs (``results`` is a :class:`~robustlab.reproduce.engine.Results`);
- ``figures(ctx, results)``: ``[(file name, caption, PNG bytes)]``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustlab.errors import RobustlabError

__all__ = [
    "SCALES",
    "RunSpec",
    "PlanContext",
    "Paper",
    "register_paper",
    "get_paper",
    "available_papers",
    "PAPER_MODULES",
    "RECIPES_DIR",
    "ReproduceError",
    "resolve_papers",
    "merge_runs",
    "stages",
]

SCALES = ("cpu", "gpu", "paper")
# ``tiny``: a smoke scale for CI (seconds; its numbers are not results).
ALL_SCALES = (*SCALES, "tiny")
RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"
# Paper modules imported on first lookup: name -> module (the order of ``all``).
PAPER_MODULES = {
    "logits": "robustlab.reproduce.papers.logits",
    "uncertainty": "robustlab.reproduce.papers.uncertainty",
    "metric": "robustlab.reproduce.papers.metric",
    "dyart": "robustlab.reproduce.papers.dyart",
}


class ReproduceError(RobustlabError):
    """A reproduction cannot be planned or run as asked."""


@dataclass(frozen=True)
class RunSpec:
    """One training run: ``recipe`` (path relative to ``recipes/``, or absolute) with
    ``overrides`` (``key=value``), under ``root/runs/<key>``. ``needs``: keys of runs that must
    be complete first. ``cost``: estimated seconds at this scale on one CPU core (for
    ``--dry-run``)."""

    key: str
    recipe: str
    overrides: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    cost: float = 0.0
    seed: int | None = None

    def recipe_path(self) -> Path:
        """The recipe file: absolute as given, else among the shipped recipes (a clone's
        ``recipes/`` or an installed wheel's ``robustlab/recipes``)."""
        from robustlab.resources import recipes_dir

        p = Path(self.recipe)
        if p.is_absolute():
            return p
        return (recipes_dir() or RECIPES_DIR) / p


@dataclass
class PlanContext:
    """What a paper needs to lay out its plan: scale, seeds, the root folder, options."""

    scale: str
    seeds: list[int]
    root: Path
    options: dict[str, Any] = field(default_factory=dict)

    def run_dir(self, key: str) -> Path:
        return self.root / "runs" / key

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"


class Paper:
    """Base class of a paper's reproduction (see the module docstring)."""

    name: str = ""
    title: str = ""
    claim_ids: tuple[str, ...] = ()
    scales: tuple[str, ...] = ALL_SCALES

    def runs(self, ctx: PlanContext) -> list[RunSpec]:
        raise NotImplementedError

    def evaluations(self, ctx: PlanContext) -> list[Any]:
        """The models to evaluate: :class:`~robustlab.reproduce.engine.EvalTarget` objects."""
        raise NotImplementedError

    def load_external(self, name: str) -> Any:
        """Build the external (third-party) model ``name`` named by an evaluation target."""
        raise ReproduceError(f"paper {self.name!r} has no external model {name!r}")

    def check_ready(self, ctx: PlanContext) -> None:
        """Fail early (before anything is written) when something the plan needs is missing."""

    def eval_cost(self, ctx: PlanContext) -> float:
        """Estimated seconds of evaluation after training (for ``--dry-run``)."""
        return 0.0

    def claims(self, ctx: PlanContext, results: Any) -> list[Any]:
        raise NotImplementedError

    def figures(self, ctx: PlanContext, results: Any) -> list[tuple[str, str, bytes]]:
        return []

    def check_scale(self, scale: str) -> None:
        if scale not in self.scales:
            raise ReproduceError(
                f"paper {self.name!r} has no {scale!r} scale yet (available: {self.scales})"
            )


_PAPERS: dict[str, type[Paper]] = {}


def register_paper(name: str) -> Callable[[type[Paper]], type[Paper]]:
    """Class decorator: register a :class:`Paper` subclass under ``name``."""

    def deco(cls: type[Paper]) -> type[Paper]:
        if name in _PAPERS and _PAPERS[name] is not cls:
            raise RobustlabError(f"paper {name!r} is already registered")
        cls.name = name
        _PAPERS[name] = cls
        return cls

    return deco


def _import_papers() -> None:
    for name, module in PAPER_MODULES.items():
        if name in _PAPERS:
            continue
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise  # a real missing dependency inside the module


def available_papers() -> list[str]:
    """Names of the registered papers, in the order of :data:`PAPER_MODULES`."""
    _import_papers()
    order = list(PAPER_MODULES)
    return sorted(_PAPERS, key=lambda n: (order.index(n) if n in order else len(order), n))


def get_paper(name: str) -> Paper:
    """A new instance of the paper registered as ``name``."""
    _import_papers()
    if name not in _PAPERS:
        raise ReproduceError(
            f"unknown paper {name!r}; choose one of {available_papers() + ['all']}"
        )
    return _PAPERS[name]()


def resolve_papers(name: str) -> list[Paper]:
    """``name``, or for ``all`` the papers robustlab ships (:data:`PAPER_MODULES`); a paper
    registered elsewhere runs by its own name."""
    if name == "all":
        return [get_paper(n) for n in PAPER_MODULES]
    return [get_paper(name)]


def merge_runs(papers: Sequence[Paper], ctx: PlanContext) -> list[RunSpec]:
    """Every paper's runs, each key once (papers may share runs: the same key must mean the
    same recipe and overrides), in an order where every run follows the runs it needs."""
    specs: dict[str, RunSpec] = {}
    for paper in papers:
        for spec in paper.runs(ctx):
            old = specs.get(spec.key)
            if old is not None and (old.recipe, old.overrides) != (spec.recipe, spec.overrides):
                raise ReproduceError(f"run {spec.key!r} is planned twice with different settings")
            specs.setdefault(spec.key, spec)
    for spec in specs.values():
        for need in spec.needs:
            if need not in specs:
                raise ReproduceError(f"run {spec.key!r} needs {need!r}, which is not planned")
    return stages_in_order(list(specs.values()))


def stages_in_order(specs: list[RunSpec]) -> list[RunSpec]:
    """Topological order (stable): runs whose needs are done come first."""
    done: set[str] = set()
    out: list[RunSpec] = []
    pending = list(specs)
    while pending:
        ready = [s for s in pending if set(s.needs) <= done]
        if not ready:
            raise ReproduceError(f"circular run dependencies among {[s.key for s in pending]}")
        out.extend(ready)
        done.update(s.key for s in ready)
        pending = [s for s in pending if s.key not in done]
    return out


def stages(specs: list[RunSpec]) -> list[list[RunSpec]]:
    """Group runs into waves: each wave needs only runs of earlier waves."""
    level: dict[str, int] = {}
    for s in stages_in_order(specs):
        level[s.key] = 1 + max((level[n] for n in s.needs), default=-1)
    waves: list[list[RunSpec]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for s in specs:
        waves[level[s.key]].append(s)
    return waves
