"""Attack specs on the command line: one attack, or an ensemble ``A+B+C`` with per-attack
options ``name:key=value,key=value`` (e.g. ``pgd:loss=ce+pgd:loss=margin+apgd-t``).

One job: turn ``--attack SPEC`` into an :class:`~robustlab.attacks.Attack` at one eps. An
ensemble is a :class:`~robustlab.attacks.autoattack.Ensemble`: each attack runs on the points
still robust, the result is the per-sample worst case with a per-attack breakdown. Options
given with their own flags (``--steps 40``) apply to every member; a member's own
``key=value`` overrides them. Values are read as YAML scalars (``steps=40``,
``random_start=false``); ``step_size`` accepts fractions (``2/255``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml

from robustlab.errors import RobustlabError

__all__ = ["parse_spec", "is_ensemble", "build_attack"]


def parse_spec(spec: str) -> list[tuple[str, str, dict[str, Any]]]:
    """``[(label, attack name, options)]`` of ``A[:k=v,...][+B...]``; labels are the member's
    text (``pgd:loss=margin``), numbered when repeated."""
    from robustlab.attacks import parse_eps

    members = []
    for part in spec.split("+"):
        text = part.strip()
        if not text:
            raise RobustlabError(f"--attack {spec!r}: empty attack between '+' signs")
        name, _, opts = text.partition(":")
        kw: dict[str, Any] = {}
        for item in filter(None, (o.strip() for o in opts.split(","))):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise RobustlabError(
                    f"--attack {spec!r}: option {item!r} must look like key=value "
                    "(e.g. pgd:loss=margin,steps=40)"
                )
            key = key.strip().replace("-", "_")
            kw[key] = parse_eps(value) if key in ("step_size", "eps") else yaml.safe_load(value)
        if "eps" in kw:
            raise RobustlabError(f"--attack {spec!r}: give eps with --eps, not per attack")
        members.append((text.lower(), name.strip().lower(), kw))
    labels = [m[0] for m in members]
    out = []
    for i, (label, name, kw) in enumerate(members):
        if labels.count(label) > 1:
            label = f"{label}#{labels[:i].count(label) + 1}"
        out.append((label, name, kw))
    return out


def is_ensemble(spec: str) -> bool:
    """Whether ``spec`` names more than one attack or has per-attack options."""
    return "+" in spec or ":" in spec


def build_attack(
    spec: str,
    eps: float,
    norm: str,
    seed: int,
    kw: dict[str, Any],
    make_attack: Callable[[str, float, str, int, dict[str, Any]], Any],
) -> Any:
    """The attack of ``spec`` at ``eps``: ``make_attack(name, eps, norm, seed, options)`` for a
    single name, an :class:`Ensemble` of such attacks for a spec with ``+`` or ``:``."""
    if not is_ensemble(spec):
        return make_attack(spec, eps, norm, seed, kw)
    from robustlab.attacks.autoattack import Ensemble

    members = []
    for label, name, own in parse_spec(spec):
        try:
            members.append((label, make_attack(name, eps, norm, seed, {**kw, **own})))
        except RobustlabError as e:
            raise RobustlabError(f"--attack {spec!r}, member {label!r}: {e}") from None
    return Ensemble(members)
