"""``robustlab reproduce``: each paper's claims checked end to end on real data, in several seeds.

A paper is a module in :mod:`robustlab.reproduce.papers` that subclasses
:class:`~robustlab.reproduce.plan.Paper` and registers itself with
:func:`~robustlab.reproduce.plan.register_paper`; it declares its runs (recipes plus overrides
per seed), the models to evaluate under :class:`~robustlab.reproduce.protocol.Protocol`, its
claims (:class:`~robustlab.reproduce.claims.Claim`) and its figures. The engine
(:mod:`robustlab.reproduce.engine`) trains, reuses and resumes runs and evaluates models;
:func:`~robustlab.reproduce.runner.reproduce` ties it together. See /docs/reproduce.md.
"""

from robustlab.reproduce.claims import Claim, Comparison, comparison, mean_diff, verdict_of
from robustlab.reproduce.engine import EvalTarget, Results
from robustlab.reproduce.plan import (
    Paper,
    PlanContext,
    ReproduceError,
    RunSpec,
    available_papers,
    get_paper,
    register_paper,
)
from robustlab.reproduce.protocol import Protocol
from robustlab.reproduce.runner import parse_seeds, reproduce

__all__ = [
    "Claim",
    "Comparison",
    "EvalTarget",
    "Paper",
    "PlanContext",
    "Protocol",
    "ReproduceError",
    "Results",
    "RunSpec",
    "available_papers",
    "comparison",
    "get_paper",
    "mean_diff",
    "parse_seeds",
    "register_paper",
    "reproduce",
    "verdict_of",
]
