"""The objective contract: the ``Objective`` base class, ``StepState``, the registry and helpers.

An objective is a dataclass of hyperparameters (validated in ``__post_init__``) that turns a
batch into a training loss::

    loss, logs = obj(model, x, y, index, state)

``model`` is what the training loop optimizes (possibly wrapped in DistributedDataParallel);
``state.raw_model`` is the unwrapped module, used for every inner maximization and extra
forward pass so that DDP only sees the outer forward. ``index`` holds the training-set indices
of the batch (used by objectives that cache per-sample targets). ``logs`` maps names to floats
or detached 0-d tensors (the loop averages them; tensors avoid a device sync per step).

Inner maximizations run through :func:`inner_max` (eval mode by default, ``attack_mode: train``
keeps the caller's mode, parameter ``requires_grad`` off) and
:func:`robustlab.attacks.perturb_iterative`, which differentiates w.r.t. the inputs only, so
no parameter ``.grad`` is ever written by an attack.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.attacks.threat import parse_eps
from robustlab.errors import ConfigError, RobustlabError
from robustlab.modes import model_mode

__all__ = [
    "Objective",
    "StepState",
    "register_objective",
    "create_objective",
    "available_objectives",
    "objective_class",
    "inner_max",
    "eval_statistics",
    "smoothed_ce",
    "entropy",
    "kl_per_sample",
    "check_range",
    "check_choice",
    "check_eps",
    "validate_threat",
    "uncertainty_loss",
    "accuracy",
    "Logs",
]

Logs = dict[str, "float | Tensor"]
O = TypeVar("O", bound="Objective")

ATTACK_MODES = ("eval", "train")


@dataclass
class StepState:
    """What the training loop tells an objective about the current step.

    ``epoch`` counts from 0 (``0 <= epoch < epochs``); ``step`` is the global optimizer step
    (from 0); ``generator`` is a seeded ``torch.Generator`` on the batch's device, used for
    every random choice of the objective (random starts, redrawn manipulations).
    """

    raw_model: nn.Module
    epoch: int = 0
    step: int = 0
    epochs: int = 1
    generator: torch.Generator | None = None
    steps_per_epoch: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def check_range(
    name: str,
    key: str,
    value: Any,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    integer: bool = False,
) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a finite number in the given range."""
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not math.isfinite(float(value)):
        raise ConfigError(f"objective {name!r}: {key} must be {kind}, got {value!r}")
    lb = "(" if lo_open else "["
    rb = ")" if hi_open else "]"
    span = f"{lb}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{rb}"
    bad = (lo is not None and (value < lo or (lo_open and value == lo))) or (
        hi is not None and (value > hi or (hi_open and value == hi))
    )
    if bad:
        raise ConfigError(f"objective {name!r}: {key} must be in {span}, got {value!r}")


def check_choice(name: str, key: str, value: Any, choices: tuple[str, ...]) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(
            f"objective {name!r}: {key} must be one of {list(choices)}, got {value!r}"
        )


def check_eps(name: str, key: str, value: Any) -> float:
    """Parse an eps (``8/255``, ``0.3``) and check it is positive; returns the float."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"objective {name!r}: {key} must be a positive number, got {value!r}")
    try:
        eps = parse_eps(value)
    except RobustlabError:
        raise ConfigError(
            f"objective {name!r}: {key} must be a positive number (e.g. 8/255), got {value!r}"
        ) from None
    return eps


@dataclass
class Objective:
    """Base class of every training objective (a dataclass of hyperparameters).

    Subclasses set ``name``, declare hyperparameters as dataclass fields, check them in
    :meth:`validate` (raising :class:`ConfigError` naming the key and the allowed values) and
    implement :meth:`forward`. ``attack_mode`` chooses the model mode of the inner
    maximization (``eval``: BatchNorm running statistics and no dropout, the default;
    ``train``: the caller's mode, as in some authors' code).
    """

    name: ClassVar[str] = ""
    attack_mode: str = "eval"

    def __post_init__(self) -> None:
        check_choice(self.name, "attack_mode", self.attack_mode, ATTACK_MODES)
        self.validate()

    def validate(self) -> None:
        """Check hyperparameters; raise :class:`ConfigError` with a clear message."""

    def setup(self, model: nn.Module, train_split: Any, device: torch.device | str) -> None:
        """Optional one-off preparation before training (e.g. a teacher-logit cache)."""

    def forward(
        self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor | None, state: StepState
    ) -> tuple[Tensor, Logs]:
        """Return ``(loss, logs)`` for one batch; ``model`` is in train mode."""
        raise NotImplementedError

    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        index: Tensor | None = None,
        state: StepState | None = None,
    ) -> tuple[Tensor, Logs]:
        if state is None:
            state = StepState(raw_model=model, generator=self._fallback_generator(x.device))
        return self.forward(model, x, y, index, state)

    def hyperparameters(self) -> dict[str, Any]:
        """The hyperparameters as a plain dict (for config files and run summaries)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}

    def _fallback_generator(self, device: torch.device) -> torch.Generator:
        # Used only when no StepState is given (library calls, tests): seeded and persistent,
        # so successive calls draw different but reproducible numbers.
        gens: dict[str, torch.Generator] = self.__dict__.setdefault("_generators", {})
        key = str(device)
        if key not in gens:
            g = torch.Generator(device=device)
            g.manual_seed(0)
            gens[key] = g
        return gens[key]

    def inner(self, model: nn.Module) -> Any:
        """Context for an inner maximization on ``model`` with this objective's attack mode."""
        return inner_max(model, self.attack_mode)


_OBJECTIVES: dict[str, type[Objective]] = {}


def register_objective(name: str) -> Callable[[type[O]], type[O]]:
    """Class decorator registering an :class:`Objective` subclass under ``name``."""

    def deco(cls: type[O]) -> type[O]:
        if name in _OBJECTIVES and _OBJECTIVES[name] is not cls:
            raise ValueError(f"objective {name!r} registered twice")
        cls.name = name
        _OBJECTIVES[name] = cls
        return cls

    return deco


def _load_all() -> None:
    import robustlab.objectives  # noqa: F401  (importing the package registers everything)


def available_objectives() -> list[str]:
    """Names of all registered objectives."""
    _load_all()
    return sorted(_OBJECTIVES)


def objective_class(name: str) -> type[Objective]:
    """The class registered under ``name``; unknown names raise :class:`ConfigError`."""
    _load_all()
    if not isinstance(name, str) or name not in _OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r}; choose one of {sorted(_OBJECTIVES)}")
    return _OBJECTIVES[name]


def create_objective(name: str, **hp: Any) -> Objective:
    """Build a registered objective; unknown names or hyperparameters raise ConfigError."""
    cls = objective_class(name)
    allowed = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(k for k in hp if k not in allowed)
    if unknown:
        raise ConfigError(
            f"objective {name!r}: unknown hyperparameter(s) {unknown}; allowed: {sorted(allowed)}"
        )
    return cls(**hp)


@contextmanager
def inner_max(model: nn.Module, mode: str = "eval") -> Iterator[nn.Module]:
    """Prepare ``model`` for an inner maximization and restore it afterwards.

    ``mode="eval"`` switches every submodule to eval mode (BatchNorm uses and keeps its
    running statistics); ``"train"`` leaves the modes alone. Parameter ``requires_grad`` is
    turned off either way (no parameter graph is built, no ``.grad`` written); modes and
    flags are restored on exit.
    """
    if mode == "eval":
        with model_mode(model, "eval"):
            yield model
    else:  # the attack sees the model as training does: its BatchNorm statistics update
        with model_mode(model, "keep", bn_stats="update"):
            yield model


@contextmanager
def eval_statistics(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (fixed BatchNorm statistics, no dropout) with parameter gradients kept on.

    For extra forward passes whose loss is differentiated w.r.t. the parameters but must not
    use or update batch statistics (DyART's margin term at boundary points).
    """
    with model_mode(model, "eval", param_grads=True):
        yield model


def smoothed_ce(logits: Tensor, y: Tensor, alpha: float = 0.0) -> Tensor:
    """Per-sample cross-entropy against ``(1 - alpha) e_y + alpha / K`` (label smoothing)."""
    logp = F.log_softmax(logits, dim=1)
    nll = -logp.gather(1, y[:, None]).squeeze(1)
    if alpha == 0.0:
        return nll
    return (1.0 - alpha) * nll - alpha * logp.mean(dim=1)


def entropy(logits: Tensor) -> Tensor:
    """Per-sample Shannon entropy ``H(softmax(logits))`` in nats."""
    logp = F.log_softmax(logits, dim=1)
    return -(logp.exp() * logp).sum(dim=1)


def kl_per_sample(logp_ref: Tensor, logits: Tensor) -> Tensor:
    """Per-sample ``KL(p_ref || softmax(logits))`` from reference log-probabilities."""
    logq = F.log_softmax(logits, dim=1)
    return (logp_ref.exp() * (logp_ref - logq)).sum(dim=1)


def accuracy(logits: Tensor, y: Tensor) -> Tensor:
    """Fraction of correct predictions, a detached 0-d tensor."""
    return (logits.detach().argmax(1) == y).float().mean()


def uncertainty_loss(
    logits: Tensor, y: Tensor, label_smoothing: float, entropy_weight: float
) -> tuple[Tensor, Logs]:
    """Mean of ``CE_LS(z, y) - lambda * H(softmax z)`` with its parts for logging.

    The uncertainty-promoting loss of Jin et al., arXiv:2011.13538 (the exact form is a
    reconstruction): label smoothing ``alpha`` and entropy maximization ``lambda``; both 0
    gives plain cross-entropy.
    """
    ce = smoothed_ce(logits, y, label_smoothing)
    loss = ce.mean()
    logs: Logs = {"ce": ce.detach().mean()}
    if entropy_weight != 0.0:
        h = entropy(logits)
        loss = loss - entropy_weight * h.mean()
        logs["entropy"] = h.detach().mean()
    return loss, logs


def validate_threat(obj: Any, step_default_factor: float | None = 2.5, steps_min: int = 1) -> None:
    """Validate and normalize ``eps``, ``norm``, ``steps`` and ``step_size`` on ``obj``.

    ``eps`` and ``step_size`` may be strings like ``8/255``; they are converted to floats.
    A missing ``step_size`` becomes ``step_default_factor * eps / steps``.
    """
    name = obj.name
    obj.eps = check_eps(name, "eps", obj.eps)
    norm = str(obj.norm).lower()
    check_choice(name, "norm", norm, ("linf", "l2"))
    obj.norm = norm
    check_range(name, "steps", obj.steps, lo=steps_min, integer=True)
    if obj.step_size is None:
        if step_default_factor is None:
            raise ConfigError(f"objective {name!r}: step_size is required")
        from robustlab.attacks.pgd import default_step_size

        obj.step_size = default_step_size(obj.eps, obj.steps, step_default_factor)
    else:
        obj.step_size = check_eps(name, "step_size", obj.step_size)
