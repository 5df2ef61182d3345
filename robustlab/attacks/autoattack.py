"""Attack ensembles and the AutoAttack presets (Croce & Hein 2020): per-sample worst case.

An :class:`Ensemble` runs its attacks in order, each only on the points that are still
correctly classified, attack by attack over the whole input set (so later attacks see full
batches of survivors), and records which attack broke each point. :class:`AutoAttack` is an
ensemble with the reference presets:

- ``standard``: APGD-CE (100 steps, 1 restart), APGD-T (100 steps, 9 target classes),
  FAB-T (100 steps, 9 target classes), Square (5000 queries, the p schedule in raw
  iterations: ``rescale_schedule=False`` as the reference's ``resc_schedule=False``);
- ``plus``: APGD-CE and untargeted APGD-DLR (5 restarts each), untargeted FAB (5 restarts),
  Square (5000 queries, 5 restarts with different seeds), APGD-T, FAB-T;
- ``rand`` (randomized models): APGD-CE and APGD-DLR with 20 EOT iterations.

Registered as ``autoattack`` (``version=``) and ``autoattack-standard|plus|rand``.
"""

from __future__ import annotations

import importlib
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from robustlab.attacks.base import (
    Attack,
    attack_mode,
    check_inputs,
    check_labels,
    create_attack,
    num_classes_of,
    register_attack,
    resolve_threat,
)
from robustlab.attacks.precision import check_precision
from robustlab.attacks.threat import ThreatModel
from robustlab.errors import RobustlabError

__all__ = ["Ensemble", "EnsembleResult", "AutoAttack", "PRESETS", "VERSIONS", "Sharding"]

Entry = tuple[str, dict[str, Any]]

PRESETS: dict[str, list[Entry]] = {
    "standard": [
        ("apgd-ce", {"steps": 100, "restarts": 1}),
        ("apgd-t", {"steps": 100, "n_targets": 9, "restarts": 1}),
        ("fab-t", {"steps": 100, "n_target_classes": 9, "restarts": 1}),
        ("square", {"n_queries": 5000, "rescale_schedule": False, "precision": "float32"}),
    ],
    "plus": [
        ("apgd-ce", {"steps": 100, "restarts": 5}),
        ("apgd-dlr", {"steps": 100, "restarts": 5}),
        ("fab", {"steps": 100, "restarts": 5}),
        (
            "square",
            {"n_queries": 5000, "rescale_schedule": False, "precision": "float32", "_repeats": 5},
        ),
        ("apgd-t", {"steps": 100, "n_targets": 9, "restarts": 1}),
        ("fab-t", {"steps": 100, "n_target_classes": 9, "restarts": 1}),
    ],
    "rand": [
        ("apgd-ce", {"steps": 100, "restarts": 1, "eot_iter": 20}),
        ("apgd-dlr", {"steps": 100, "restarts": 1, "eot_iter": 20}),
    ],
}
VERSIONS = tuple(PRESETS)


@dataclass
class EnsembleResult:
    """Per-sample outcome of an ensemble (or of a single attack run through one)."""

    x_adv: Tensor  # the first adversarial example found, else the clean input
    clean_correct: Tensor  # bool (N,)
    robust_correct: Tensor  # bool (N,): correct on the clean input and after every attack
    broken_by: Tensor  # int64 (N,): index into ``attacks`` of the breaking attack, -1 if none
    attacks: list[str]
    per_attack: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def clean_accuracy(self) -> float:
        n = self.clean_correct.numel()
        return int(self.clean_correct.sum()) / n if n else 0.0

    @property
    def robust_accuracy(self) -> float:
        n = self.robust_correct.numel()
        return int(self.robust_correct.sum()) / n if n else 0.0

    def broken_by_name(self) -> list[str | None]:
        """Per sample: the name of the attack that broke it (None if unbroken or wrong clean)."""
        return [self.attacks[i] if i >= 0 else None for i in self.broken_by.tolist()]


def _predict(model: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    out = []
    with torch.no_grad():
        for s in range(0, x.shape[0], batch_size):
            out.append(model(x[s : s + batch_size]).argmax(1))
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long, device=x.device)


@dataclass
class Sharding:
    """Distributed evaluation: this process is ``rank`` of ``world``; ``all_gather(obj)``
    returns every rank's ``obj`` in rank order (e.g. ``torch.distributed.all_gather_object``)."""

    rank: int
    world: int
    all_gather: Callable[[Any], list[Any]]

    def gather_chunks(self, mine: dict[int, Tensor], device: torch.device) -> dict[int, Tensor]:
        """Every rank's chunk results (keyed by chunk start), on ``device``."""
        local = {k: v.detach().cpu() for k, v in mine.items()}
        merged: dict[int, Tensor] = {}
        for part in self.all_gather(local):
            merged.update({k: v.to(device) for k, v in part.items()})
        return merged


def _stage_record(label: str, n_in: int, n_out: int, n: int, t0: float) -> dict[str, Any]:
    return {
        "attack": label,
        "attacked": n_in,
        "broken": n_in - n_out,
        "robust_accuracy_after": n_out / n if n else 0.0,
        "seconds": time.perf_counter() - t0,
    }


class Ensemble(Attack):
    """Run ``attacks`` (a list of ``(label, Attack)``) in order on the still-robust points.

    ``batch_size`` bounds how many points one attack call sees (None: all at once). Each
    attack's own seed drives its randomness; ``repeats`` (same length as ``attacks``, default
    1 each) re-runs an attack with seeds ``seed, seed + 1, ...`` on the points it left.
    """

    name = "ensemble"

    def __init__(
        self,
        attacks: Sequence[tuple[str, Attack]],
        threat: ThreatModel | None = None,
        seed: int | None = 0,
        batch_size: int | None = None,
        repeats: Sequence[int] | None = None,
        progress: bool = False,
    ) -> None:
        if not attacks:
            raise RobustlabError("an attack ensemble needs at least one attack")
        if threat is None:
            threat = attacks[0][1].threat
        super().__init__(threat, seed)
        self.attacks = list(attacks)
        self.repeats = list(repeats) if repeats is not None else [1] * len(self.attacks)
        if len(self.repeats) != len(self.attacks):
            raise RobustlabError("repeats must have one entry per attack")
        if batch_size is not None and batch_size < 1:
            raise RobustlabError(f"batch size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.progress = progress
        self.skipped: list[str] = []
        self.sharding: Sharding | None = None  # set by distributed evaluation

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        return self._run(model, x, y).x_adv

    def run(self, model: nn.Module, x: Tensor, y: Tensor) -> EnsembleResult:
        """Checked entry point returning the per-sample record (see :class:`EnsembleResult`)."""
        check_inputs(x, y)
        y = y.to(device=x.device, dtype=torch.long)
        x0 = x.detach().clone()
        with attack_mode(model):
            if x0.shape[0]:
                check_labels(y, num_classes_of(model, x0))
            res = self._run(model, x0, y)
        res.x_adv = self.threat.project(res.x_adv.detach().to(dtype=x.dtype), x0)
        return res

    def _run(self, model: nn.Module, x: Tensor, y: Tensor) -> EnsembleResult:
        n = x.shape[0]
        bs = self.batch_size or max(n, 1)
        clean = _predict(model, x, bs) == y
        robust = clean.clone()
        broken_by = torch.full((n,), -1, dtype=torch.long, device=x.device)
        x_adv = x.clone()
        per_attack = []
        for ai, ((label, attack), reps) in enumerate(zip(self.attacks, self.repeats, strict=True)):
            t0 = time.perf_counter()
            n_in = int(robust.sum())
            for r in range(reps):
                todo = robust.nonzero().squeeze(1)
                if todo.numel() == 0:
                    break
                seed0 = attack.seed
                if r:
                    attack.seed = (seed0 or 0) + r
                try:
                    desc = label if reps == 1 else f"{label} ({r + 1}/{reps})"
                    fn = partial(attack, model)
                    adv = self.run_chunks(fn, x, y, todo, desc)
                    wrong = _predict(model, adv, bs) != y[todo]
                    hit = todo[wrong]
                    x_adv[hit] = adv[wrong]
                    robust[hit] = False
                    broken_by[hit] = ai
                finally:
                    attack.seed = seed0
            per_attack.append(_stage_record(label, n_in, int(robust.sum()), n, t0))
        return EnsembleResult(
            x_adv=x_adv,
            clean_correct=clean,
            robust_correct=robust,
            broken_by=broken_by,
            attacks=[a for a, _ in self.attacks],
            per_attack=per_attack,
            skipped=list(self.skipped),
        )

    def run_chunks(
        self,
        fn: Callable[[Tensor, Tensor], Tensor],
        x: Tensor,
        y: Tensor,
        todo: Tensor,
        desc: str,
    ) -> Tensor:
        """``fn(x[idx], y[idx])`` on the chunks ``idx`` of ``todo`` (``batch_size`` points
        each); the results, concatenated in ``todo``'s order.

        With :attr:`sharding` (distributed evaluation), chunk ``c`` runs on rank ``c % world``
        and the results are gathered on every rank: the chunks and their seeds are those of a
        single process, so the outcome is the same.
        """
        bs = self.batch_size or max(todo.numel(), 1)
        starts = list(range(0, todo.numel(), bs))
        sh = self.sharding
        mine = starts if sh is None else starts[sh.rank :: sh.world]
        out: dict[int, Tensor] = {}
        for s in tqdm(mine, desc=desc, unit="batch", disable=not self.progress):
            idx = todo[s : s + bs]
            out[s] = fn(x[idx], y[idx])
        if sh is not None:
            out = sh.gather_chunks(out, x.device)
        return torch.cat([out[s] for s in starts]) if starts else x[:0].clone()

    def __repr__(self) -> str:
        return f"Ensemble({[a for a, _ in self.attacks]}, {self.threat!r})"


def build_entries(
    entries: Sequence[str | Entry],
    threat: ThreatModel,
    seed: int | None,
    steps: int | None = None,
    n_queries: int | None = None,
    precision: str | None = None,
) -> tuple[list[tuple[str, Attack]], list[int], list[str]]:
    """Build the attacks of an ensemble; entries whose attack is not registered are skipped;
    ``precision`` (if given) is passed to every attack."""
    from robustlab.attacks.base import available_attacks

    for module in ("fab", "square"):  # registered by their own modules; load them if present
        try:
            importlib.import_module(f"robustlab.attacks.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"robustlab.attacks.{module}":
                raise
    names = available_attacks()
    built, repeats, skipped = [], [], []
    for entry in entries:
        name, kw = (entry, {}) if isinstance(entry, str) else (entry[0], dict(entry[1]))
        if name.startswith("autoattack"):
            raise RobustlabError("an ensemble cannot contain another AutoAttack")
        if name not in names:
            skipped.append(name)
            continue
        reps = int(kw.pop("_repeats", 1))
        if steps is not None and "steps" in kw:
            kw["steps"] = steps
        if n_queries is not None and "n_queries" in kw:
            kw["n_queries"] = n_queries
        if precision is not None:
            kw["precision"] = precision
        try:
            built.append((name, create_attack(name, threat=threat, seed=seed, **kw)))
        except TypeError as e:  # an attack of a custom list without the option
            if precision is None or "precision" not in str(e):
                raise
            raise RobustlabError(f"attack {name!r} does not take precision") from None
        repeats.append(reps)
    return built, repeats, skipped


@register_attack("autoattack")
class AutoAttack(Ensemble):
    """AutoAttack (``autoattack``): ``version`` ``standard`` (default), ``plus`` or ``rand``.

    ``attacks`` replaces the preset by a custom list of registered names or ``(name, kwargs)``.
    ``steps`` overrides the iteration count of the iterative sub-attacks (the reference uses
    100) and ``n_queries`` Square's query budget (5000): smaller values make the evaluation
    weaker than the reference. ``precision`` ("float32", the presets' default; "bf16"; "auto")
    is passed to every attack (:mod:`robustlab.attacks.precision`): bf16 model passes with
    every success confirmed in float32, a different search path from float32's.
    """

    name = "autoattack"

    def __init__(
        self,
        eps: float | str | Tensor | None = None,
        norm: str = "linf",
        threat: ThreatModel | None = None,
        version: str = "standard",
        attacks: Sequence[str | Entry] | None = None,
        steps: int | None = None,
        n_queries: int | None = None,
        seed: int | None = 0,
        batch_size: int | None = None,
        progress: bool = False,
        precision: str | None = None,
    ) -> None:
        th = resolve_threat(threat, eps, norm)
        if precision is not None:
            check_precision(precision)
        if version not in PRESETS:
            raise RobustlabError(
                f"unknown AutoAttack version {version!r}; choose one of {VERSIONS}"
            )
        if steps is not None and (not isinstance(steps, int) or steps < 1):
            raise RobustlabError(f"steps must be a positive integer, got {steps!r}")
        if n_queries is not None and (not isinstance(n_queries, int) or n_queries < 1):
            raise RobustlabError(f"n_queries must be a positive integer, got {n_queries!r}")
        entries = PRESETS[version] if attacks is None else list(attacks)
        built, repeats, skipped = build_entries(entries, th, seed, steps, n_queries, precision)
        if skipped:
            warnings.warn(
                f"AutoAttack {version}: attacks not available and skipped: {skipped} "
                "(the evaluation is weaker than the reference)",
                stacklevel=2,
            )
        if not built:
            raise RobustlabError(f"none of the attacks {[e for e in entries]} is available")
        super().__init__(built, th, seed, batch_size, repeats, progress)
        self.version = version if attacks is None else "custom"
        self.steps, self.n_queries = steps, n_queries
        self.skipped = skipped

    def __repr__(self) -> str:
        return f"AutoAttack({self.version!r}, {self.threat!r}, {[a for a, _ in self.attacks]})"


def _preset(version: str) -> Callable[..., AutoAttack]:
    def factory(**kw: Any) -> AutoAttack:
        kw.pop("version", None)
        return AutoAttack(version=version, **kw)

    factory.__name__ = f"autoattack_{version}"
    return factory


for _v in VERSIONS:
    register_attack(f"autoattack-{_v}")(_preset(_v))
