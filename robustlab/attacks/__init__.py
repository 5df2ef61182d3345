"""Attacks and threat models: FGSM, PGD, APGD, FAB (boundary solver), Square, AutoAttack."""

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
]
