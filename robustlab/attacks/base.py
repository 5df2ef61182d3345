"""The attack contract: input checks, the eval-mode context, the Attack base class and registry.

Contract of every attack call ``attack(model, x, y) -> x_adv``:
inputs are never mutated; the result is detached, of the same shape, dtype and device as
``x``, inside the threat model's ball and the [0, 1] box; the model is in eval mode with
parameter gradients off during the attack and the caller's modes are restored afterwards
(so no parameter ``.grad`` and no BatchNorm statistic changes); every random choice comes
from ``seed``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from robustlab.attacks.threat import ThreatModel, make_threat
from robustlab.errors import RobustlabError
from robustlab.modes import model_mode

__all__ = [
    "AttackInputError",
    "Attack",
    "attack_mode",
    "check_inputs",
    "check_labels",
    "make_generator",
    "register_attack",
    "create_attack",
    "available_attacks",
    "resolve_threat",
    "num_classes_of",
]


class AttackInputError(RobustlabError, ValueError):
    """Images or labels given to an attack are not valid."""


@contextmanager
def attack_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with parameter gradients off; restore both on exit
    (:func:`robustlab.modes.model_mode`)."""
    with model_mode(model, "eval"):
        yield model


def check_inputs(x: Tensor, y: Tensor | None = None) -> None:
    """Raise :class:`AttackInputError` unless ``x`` is a float batch in [0, 1] without NaN
    and ``y`` (if given) is an integer vector of the same length."""
    if not isinstance(x, Tensor):
        raise AttackInputError(f"images must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise AttackInputError(f"images must be a batch (N, C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise AttackInputError(f"images must be floating point in [0, 1], got dtype {x.dtype}")
    if x.numel() and bool(torch.isnan(x).any()):
        raise AttackInputError("images contain NaN")
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise AttackInputError(
            f"images must lie in [0, 1], got range [{float(x.min()):.4g}, {float(x.max()):.4g}]"
            " (normalization belongs inside the model)"
        )
    if y is not None:
        if not isinstance(y, Tensor) or y.dim() != 1:
            raise AttackInputError("labels must be a 1-D tensor of class indices")
        if y.is_floating_point() or y.dtype == torch.bool:
            raise AttackInputError(f"labels must be integers, got dtype {y.dtype}")
        if y.shape[0] != x.shape[0]:
            raise AttackInputError(
                f"batch has {x.shape[0]} images but {y.shape[0]} labels (lengths must match)"
            )


def check_labels(y: Tensor, num_classes: int) -> None:
    """Raise :class:`AttackInputError` if a label is outside ``[0, num_classes)``."""
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise AttackInputError(
            f"labels must be in [0, {num_classes}), got range [{int(y.min())}, {int(y.max())}]"
        )


def resolve_threat(
    threat: Any = None, eps: float | str | Tensor | None = None, norm: str = "linf"
) -> ThreatModel:
    """The threat model of an attack: ``threat`` if given, else ``make_threat(norm, eps)``.

    Raises a clear error when neither is given or when both disagree in kind.
    """
    if threat is not None:
        if not isinstance(threat, ThreatModel):
            raise RobustlabError(f"threat must be a ThreatModel, got {type(threat).__name__}")
        return threat
    if eps is None:
        raise RobustlabError("an attack needs eps (and norm) or a threat model")
    return make_threat(norm, eps)


@torch.no_grad()
def num_classes_of(model: nn.Module, x: Tensor) -> int:
    """Number of classes the model predicts, from one forward pass on one input."""
    out = model(x[:1])
    if not isinstance(out, Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise RobustlabError(f"the model must return logits of shape (N, classes), got {shape}")
    return int(out.shape[1])


def make_generator(seed: int | None, device: torch.device | str) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed`` (0 when None)."""
    g = torch.Generator(device=device)
    g.manual_seed(0 if seed is None else int(seed))
    return g


class Attack(ABC):
    """Base class: checks inputs, enters :func:`attack_mode`, calls :meth:`perturb`.

    Subclasses implement ``perturb(model, x, y, generator)`` on a detached copy of ``x``
    and may assume the model is in eval mode with parameter gradients off.
    """

    name: str = ""

    def __init__(self, threat: Any = None, seed: int | None = 0) -> None:
        self.threat = threat
        self.seed = seed

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        check_inputs(x, y)
        y = y.to(device=x.device, dtype=torch.long)
        x0 = x.detach().clone()
        with attack_mode(model):
            if x0.shape[0]:
                check_labels(y, num_classes_of(model, x0))
            gen = make_generator(self.seed, x.device)
            x_adv = self.perturb(model, x0, y, gen)
        x_adv = x_adv.detach().to(dtype=x.dtype)
        if self.threat is not None:
            x_adv = self.threat.project(x_adv, x0)
        return x_adv

    @abstractmethod
    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        """Return adversarial inputs for ``x`` (a detached copy the attack may not mutate)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.threat!r})"


_ATTACKS: dict[str, Callable[..., Attack]] = {}


def register_attack(name: str) -> Callable[[Callable[..., Attack]], Callable[..., Attack]]:
    """Class decorator registering an attack (or preset factory) under ``name``."""

    def deco(cls: Callable[..., Attack]) -> Callable[..., Attack]:
        _ATTACKS[name] = cls
        return cls

    return deco


def available_attacks() -> list[str]:
    """Names of all registered attacks and presets."""
    import robustlab.attacks  # noqa: F401  (registers everything)

    return sorted(_ATTACKS)


def create_attack(name: str, **kwargs: Any) -> Attack:
    """Build a registered attack by name; unknown names raise a clear error."""
    names = available_attacks()
    key = name.lower()
    if key not in _ATTACKS:
        raise RobustlabError(f"unknown attack {name!r}; choose one of {names}")
    return _ATTACKS[key](**kwargs)
