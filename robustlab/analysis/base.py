"""The analysis registry: :class:`Analysis` plugins registered by name, with typed results.

One job: the extension point every analysis goes through, in the way objectives work
(``robustlab.objectives.base``). An analysis is one class, registered with
:func:`register_analysis`, that declares

* ``compute(inputs) -> AnalysisResult``: from a model and a batch (:class:`AnalysisInputs`) to
  summary numbers (bootstrap intervals included) and per-sample arrays;
* ``logged(summary)``: the numbers the training callback logs per epoch (``analysis/<name>``);
* ``rows(summaries)``: its rows in the report's analysis table;
* ``figures(runs, plot)``: its report figures, drawn with the plotting module the report
  passes in (``robustlab.report.figures``), so this layer never imports the report;
* ``headline(summary)``: its part of the one-line summary ``robustlab analyze`` prints.

``compute_analyses`` (``analysis/run.py``), the ``analysis`` training callback
(``analysis/callbacks.py``), the report (``report/html.py``) and ``robustlab analyze`` loop over
:func:`registered_analyses`; nothing else names an analysis.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from torch import Tensor, nn

from robustlab.errors import RobustlabError

__all__ = [
    "Analysis",
    "AnalysisInputs",
    "AnalysisResult",
    "Figure",
    "register_analysis",
    "registered_analyses",
    "get_analysis",
    "analysis_names",
    "parse_analyses",
    "summary_value",
]


@dataclass
class AnalysisResult:
    """What one analysis computes: JSON-ready ``summary`` numbers (a statistic with a bootstrap
    interval is ``{"mean", "ci_low", "ci_high", ...}`` or ``<key>_mean/_ci_low/_ci_high``) and
    per-sample ``arrays`` (one value per analysed sample, or any array a figure needs)."""

    summary: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class AnalysisInputs:
    """What an analysis sees: the model and the batch, the threat model, the options, and the
    results of the analyses it ``requires`` (computed first).

    ``objectives`` (``{label: objective}``) and ``train_batch`` ``(x, y, index)`` are the live
    training objectives and a training batch with its training-set indices (for objectives
    whose targets are cached per sample, such as ``distill``).
    """

    model: nn.Module
    x: Tensor
    y: Tensor
    norm: str = "linf"
    eps: float = 0.3
    seed: int = 0
    objectives: dict[str, Any] = field(default_factory=dict)
    train_batch: tuple[Tensor, Tensor, Tensor] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    results: dict[str, AnalysisResult] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def threat(self) -> Any:
        """The threat model ``(norm, eps)`` the margins and dynamics use."""
        from robustlab.attacks.threat import make_threat

        return make_threat(self.norm, self.eps)

    def option(self, key: str, default: Any) -> Any:
        """An analysis option (``margin_steps``, ``batch_size``, ...) or its default."""
        return self.options.get(key, default)


@dataclass
class Figure:
    """One report figure: its section, caption and PNG bytes; ``wide`` spans the page."""

    section: str
    caption: str
    png: bytes
    wide: bool = False


def summary_value(summary: dict[str, Any] | None, key: str) -> Any:
    """``summary[key]`` as a number or a ``{"mean", "ci_low", "ci_high"}`` dict: a
    ``summarize`` entry, ``<key>_mean`` with its interval, or a plain value; None if absent."""
    if not isinstance(summary, dict):
        return None
    v = summary.get(key)
    if isinstance(v, dict):
        return v
    if f"{key}_mean" in summary:
        return {
            "mean": summary[f"{key}_mean"],
            "ci_low": summary.get(f"{key}_ci_low"),
            "ci_high": summary.get(f"{key}_ci_high"),
        }
    return v


def _mean(v: Any) -> float | None:
    if isinstance(v, dict):
        v = v.get("mean")
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)):
        return float(v)
    return None


class Analysis:
    """Base class of the registered analyses (see the module docstring).

    Class attributes: ``name`` (set by :func:`register_analysis`), ``title`` and
    ``definition`` (the report section's heading and the paragraph saying what is measured, with
    the paper it comes from), ``sections`` (several report sections, ``(id, heading,
    definition)``; default one section named after the analysis), ``requires`` (analyses
    computed first and stored with it), ``default`` (run by ``robustlab analyze`` without
    ``--what``), ``LOGGED`` (``(summary key, logged name)`` pairs), ``ROWS`` (``(summary key,
    row label)`` pairs) and ``HEADLINE`` (``(summary key, text)`` pairs). Override the methods
    for anything these declarations do not cover.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    definition: ClassVar[str] = ""
    sections: ClassVar[tuple[tuple[str, str, str], ...]] = ()
    requires: ClassVar[tuple[str, ...]] = ()
    default: ClassVar[bool] = True
    LOGGED: ClassVar[tuple[tuple[str, str], ...]] = ()
    ROWS: ClassVar[tuple[tuple[str, str], ...]] = ()
    HEADLINE: ClassVar[tuple[tuple[str, str], ...]] = ()

    def compute(self, inputs: AnalysisInputs) -> AnalysisResult:
        raise NotImplementedError

    def report_sections(self) -> tuple[tuple[str, str, str], ...]:
        """``(id, heading, definition)`` of its report sections (figures name the id)."""
        return self.sections or ((self.name, self.title or self.name, self.definition),)

    def logged(self, summary: dict[str, Any]) -> dict[str, float]:
        """Numbers logged per epoch (names without the ``analysis/`` prefix)."""
        out = {}
        for key, label in self.LOGGED:
            v = _mean(summary_value(summary, key))
            if v is not None:
                out[label] = v
        return out

    def rows(self, summaries: Sequence[dict[str, Any] | None]) -> list[tuple[str, list[Any]]]:
        """Report rows: ``(label, one value per run)`` (a value is a number, a
        ``{"mean", "ci_low", "ci_high"}`` dict, or None)."""
        return [(label, [summary_value(s, key) for s in summaries]) for key, label in self.ROWS]

    def figures(self, runs: Sequence[Any], plot: Any) -> list[Figure]:
        """Report figures from the runs' stored results (``run.name``, ``run.analysis[name]``
        summaries, ``run.arrays[name]`` arrays, ``run.config``); ``plot`` is
        ``robustlab.report.figures``."""
        return []

    def headline(self, summary: dict[str, Any]) -> list[str]:
        """Short ``"label value"`` strings for ``robustlab analyze``'s one-line summary."""
        out = []
        for key, text in self.HEADLINE:
            v = _mean(summary_value(summary, key))
            if v is not None:
                out.append(f"{text} {v:.3g}")
        return out


_REGISTRY: dict[str, type[Analysis]] = {}


def register_analysis(name: str) -> Callable[[type[Analysis]], type[Analysis]]:
    """Class decorator: register an :class:`Analysis` subclass under ``name`` (the order of
    registration is the order analyses run and appear in the report)."""

    def deco(cls: type[Analysis]) -> type[Analysis]:
        _load_builtin()  # the built-in analyses come first, whoever registers first
        if not (isinstance(cls, type) and issubclass(cls, Analysis)):
            raise TypeError(f"register_analysis({name!r}) expects an Analysis subclass")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _load_builtin() -> None:
    import robustlab.analysis.registered  # noqa: F401 - registers the built-in analyses


def registered_analyses() -> list[Analysis]:
    """One instance of every registered analysis, in registration order."""
    _load_builtin()
    return [cls() for cls in _REGISTRY.values()]


def analysis_names(default_only: bool = False) -> list[str]:
    """Registered names (``default_only``: those run when no list is given)."""
    _load_builtin()
    return [n for n, c in _REGISTRY.items() if c.default or not default_only]


def get_analysis(name: str) -> Analysis:
    """The registered analysis ``name``; unknown names list the known ones."""
    _load_builtin()
    if name not in _REGISTRY:
        raise RobustlabError(f"unknown analysis {name!r}; choose from {', '.join(_REGISTRY)}")
    return _REGISTRY[name]()


def parse_analyses(what: str | Iterable[str] | None) -> list[str]:
    """``"logits,fisher"`` or a list -> validated names in registry order, with the analyses
    they require added; None -> every default analysis."""
    _load_builtin()
    if what is None:
        names = analysis_names(default_only=True)
    else:
        names = [w.strip().lower() for w in (what.split(",") if isinstance(what, str) else what)]
        names = [n for n in names if n]
        if not names:
            raise RobustlabError(f"no analysis named; choose from {', '.join(_REGISTRY)}")
    for n in names:
        get_analysis(n)
    todo = list(names)
    while todo:
        for req in _REGISTRY[todo.pop()].requires:
            if req not in names:
                get_analysis(req)
                names.append(req)
                todo.append(req)
    return [n for n in _REGISTRY if n in names]
