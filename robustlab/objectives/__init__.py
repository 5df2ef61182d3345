"""Training objectives: one module per method, registered by name.

``create_objective(name, **hp)`` builds one; ``obj(model, x, y, index, state) -> (loss, logs)``.
Names: ``standard`` (with ``ls``/``entm`` presets), ``pgd_at``, ``fast_at``, ``trades``,
``mart``, ``fisher``, ``distill``, ``dyart``. See docs/objectives.md.
"""

from robustlab.objectives.base import (
    Objective,
    StepState,
    available_objectives,
    create_objective,
    eval_statistics,
    inner_max,
    objective_class,
    register_objective,
)
from robustlab.objectives.distill import Distill
from robustlab.objectives.dyart import DyART
from robustlab.objectives.fisher import FisherReg
from robustlab.objectives.mart import MART
from robustlab.objectives.pgd_at import PGDAT, FastAT
from robustlab.objectives.standard import EntM, LabelSmoothing, Standard
from robustlab.objectives.trades import TRADES

__all__ = [
    "Objective",
    "StepState",
    "available_objectives",
    "create_objective",
    "eval_statistics",
    "inner_max",
    "objective_class",
    "register_objective",
    "Distill",
    "DyART",
    "EntM",
    "FastAT",
    "FisherReg",
    "LabelSmoothing",
    "MART",
    "PGDAT",
    "Standard",
    "TRADES",
]
