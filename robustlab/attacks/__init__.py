"""Attacks and threat models: FGSM, PGD, APGD, FAB (boundary solver), Square, AutoAttack."""

from robustlab.attacks.apgd import APGD, APGDT, apgd, apgd_targeted
from robustlab.attacks.autoattack import AutoAttack, Ensemble, EnsembleResult
from robustlab.attacks.base import (
    Attack,
    AttackInputError,
    attack_mode,
    available_attacks,
    check_inputs,
    check_labels,
    create_attack,
    make_generator,
    register_attack,
)
from robustlab.attacks.core import ce_loss, dlr_loss, get_loss, margin_loss, perturb_iterative
from robustlab.attacks.fab import FAB, BoundaryResult, FABTargeted, boundary_search
from robustlab.attacks.fast import MALTAPGDT, FastAttack
from robustlab.attacks.fgsm import FGSM, fgsm
from robustlab.attacks.margins import MarginResult, minimum_norm_margins, robust_accuracy_curve
from robustlab.attacks.pgd import PGD, pgd
from robustlab.attacks.square import Square
from robustlab.attacks.threat import L1, L2, Linf, ThreatModel, make_threat, parse_eps

__all__ = [
    "Attack",
    "AttackInputError",
    "attack_mode",
    "available_attacks",
    "check_inputs",
    "check_labels",
    "create_attack",
    "make_generator",
    "register_attack",
    "ce_loss",
    "dlr_loss",
    "get_loss",
    "margin_loss",
    "perturb_iterative",
    "L1",
    "L2",
    "Linf",
    "ThreatModel",
    "make_threat",
    "parse_eps",
    "FGSM",
    "fgsm",
    "PGD",
    "pgd",
    "APGD",
    "APGDT",
    "apgd",
    "apgd_targeted",
    "AutoAttack",
    "FastAttack",
    "MALTAPGDT",
    "Ensemble",
    "EnsembleResult",
    "FAB",
    "FABTargeted",
    "BoundaryResult",
    "boundary_search",
    "MarginResult",
    "minimum_norm_margins",
    "robust_accuracy_curve",
    "Square",
]
