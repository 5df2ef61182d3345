"""Clean-input distillation from a (robust) teacher with manipulated logits.

The experiment of "Understanding the Logit Distributions of Adversarially-Trained Deep Neural
Networks" (Seguin et al., arXiv:2108.12001); the loss is a reconstruction following
"Adversarially Robust Distillation" (Goldblum et al., arXiv:1905.09747), on clean inputs only.
With student logits ``zS``, cached teacher logits ``zT`` and temperature ``tau``:

- ``weighting: convex`` (default): ``L = alpha tau^2 KL(softmax(zT/tau) || softmax(zS/tau))
  + (1 - alpha) CE(zS, y)``;
- ``weighting: full_kl``: the KL term at full weight, ``L = tau^2 KL(...) +
  (1 - alpha) CE(zS, y)`` (the two agree at ``alpha = 1``, the default). ``brief`` is an
  older name of ``full_kl``, still accepted.

``teacher_view: clean`` (default): teacher logits are computed once in :meth:`Distill.setup`
for every training index (eval mode, un-augmented images, batched) and looked up by the
batch's ``index``. ``teacher_view: augmented``: the teacher sees the student's view, i.e. its
logits are computed on the batch the student gets (after random crop/flip), every step, in
eval mode without gradients, as adversarially robust distillation does (Goldblum et al.);
random manipulations are then drawn per batch from the step's generator (a fixed draw per
index needs fixed logits), while the pooled values and gaps that ``sorted_resample`` and
``conf_swap`` draw from still come from the clean cache. The ``manipulation``
(see :mod:`robustlab.objectives.manipulations`) is applied once to the whole cache with a
generator seeded by ``seed`` (fixed per index), or per batch with the step's generator when
``redraw: true`` (which acts like label noise). References: ``none`` (intact teacher),
``standard_teacher`` (the intact ``std_teacher``) and ``hard_labels`` (plain cross-entropy,
no teacher).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.data.convert import to_float
from robustlab.errors import ConfigError, RobustlabError
from robustlab.modes import model_mode
from robustlab.objectives.base import (
    Logs,
    Objective,
    StepState,
    accuracy,
    check_choice,
    check_range,
    register_objective,
)
from robustlab.objectives.manipulations import MANIPULATIONS, manipulate, non_max_values, top2_gap

__all__ = ["Distill", "teacher_logits", "distill_loss"]

REFERENCES = ("standard_teacher", "hard_labels")
CHOICES = MANIPULATIONS + REFERENCES
NEEDS_STD = ("std_order", "standard_teacher")
WEIGHTINGS = ("convex", "full_kl")
WEIGHTING_ALIASES = {"brief": "full_kl"}  # older names, still accepted


def distill_loss(
    student: Tensor, teacher: Tensor, y: Tensor, tau: float, alpha: float, weighting: str
) -> tuple[Tensor, Logs]:
    """The distillation loss (batch mean) and its parts; see the module docstring."""
    logq = F.log_softmax(student / tau, dim=1)
    logp = F.log_softmax(teacher / tau, dim=1)
    kl = (logp.exp() * (logp - logq)).sum(dim=1).mean() * tau**2
    ce = F.cross_entropy(student, y)
    kl_weight = alpha if weighting == "convex" else 1.0  # full_kl
    loss = kl_weight * kl + (1.0 - alpha) * ce
    return loss, {"kl": kl.detach(), "ce": ce.detach()}


@torch.no_grad()
def teacher_logits(
    teacher: nn.Module, images: Tensor, device: torch.device | str, batch_size: int = 512
) -> Tensor:
    """Logits of ``teacher`` (eval mode) on ``images`` (uint8 or float in [0, 1]), batched."""
    out = []
    with model_mode(teacher, "eval"):
        for i in range(0, images.shape[0], batch_size):
            out.append(teacher(to_float(images[i : i + batch_size], device)).float())
    return torch.cat(out) if out else torch.zeros(0, 0, device=device)


def _num_classes(split: Any) -> int:
    info = getattr(split, "info", None)
    k = getattr(info, "num_classes", None)
    return int(k) if k is not None else int(split.labels.max()) + 1


@register_objective("distill")
@dataclass
class Distill(Objective):
    """Distillation on clean inputs from cached, optionally manipulated, teacher logits.

    ``teacher``/``std_teacher``: a checkpoint path (built with ``teacher_model``/
    ``std_teacher_model`` through ``robustlab.models``) or an ``nn.Module``.
    """

    teacher: str | nn.Module | None = None
    teacher_model: str | None = None
    teacher_kwargs: dict[str, Any] = field(default_factory=dict)
    teacher_remap: str = "none"
    std_teacher: str | nn.Module | None = None
    std_teacher_model: str | None = None
    std_teacher_kwargs: dict[str, Any] = field(default_factory=dict)
    manipulation: str = "none"
    tau: float = 4.0
    alpha: float = 1.0
    weighting: str = "convex"
    redraw: bool = False
    seed: int = 0
    batch_size: int = 512
    teacher_view: str = "clean"

    _targets: Tensor | None = field(default=None, init=False, repr=False)
    _z_at: Tensor | None = field(default=None, init=False, repr=False)
    _z_std: Tensor | None = field(default=None, init=False, repr=False)
    _pool: Tensor | None = field(default=None, init=False, repr=False)
    _gaps: Tensor | None = field(default=None, init=False, repr=False)
    _nets: dict[str, nn.Module] = field(default_factory=dict, init=False, repr=False)

    def validate(self) -> None:
        n = self.name
        check_choice(n, "manipulation", self.manipulation, CHOICES)
        check_range(n, "tau", self.tau, lo=0.0, lo_open=True)
        check_range(n, "alpha", self.alpha, 0.0, 1.0)
        self.weighting = WEIGHTING_ALIASES.get(self.weighting, self.weighting)
        check_choice(n, "weighting", self.weighting, WEIGHTINGS)
        check_choice(n, "redraw", self.redraw, (True, False))
        check_choice(n, "teacher_remap", self.teacher_remap, ("none", "auto"))
        check_range(n, "seed", self.seed, lo=0, integer=True)
        check_range(n, "batch_size", self.batch_size, lo=1, integer=True)
        check_choice(n, "teacher_view", self.teacher_view, ("clean", "augmented"))
        if self.manipulation not in ("hard_labels", "standard_teacher"):
            self._check_teacher("teacher", self.teacher, self.teacher_model)
        if self.manipulation in NEEDS_STD:
            self._check_teacher("std_teacher", self.std_teacher, self.std_teacher_model)

    def _check_teacher(self, key: str, path: Any, model_name: str | None) -> None:
        if isinstance(path, nn.Module):
            return
        if path is None:
            raise ConfigError(
                f"objective 'distill': manipulation {self.manipulation!r} needs {key} "
                "(a checkpoint path)"
            )
        if not isinstance(path, (str, Path)) or not Path(path).is_file():
            raise ConfigError(f"objective 'distill': {key} checkpoint not found: {path!r}")
        if not model_name:
            raise ConfigError(
                f"objective 'distill': {key}_model (the architecture name) is required with a "
                f"{key} checkpoint"
            )

    # -- setup ----------------------------------------------------------------------------
    def _build(
        self,
        key: str,
        src: Any,
        model_name: str | None,
        kwargs: dict[str, Any],
        split: Any,
        device: torch.device | str,
    ) -> nn.Module:
        if isinstance(src, nn.Module):
            return src.to(device)
        try:
            from robustlab.models import create_model, load_checkpoint
        except ImportError as e:  # pragma: no cover - the models package is part of robustlab
            raise RobustlabError(f"cannot build {key}: robustlab.models unavailable ({e})") from e
        kw = dict(kwargs)
        if "dataset" not in kw and "num_classes" not in kw:
            info = getattr(split, "info", None)
            kw["dataset"] = getattr(info, "name", None)
        net = create_model(model_name, **kw)
        load_checkpoint(net, src, remap=self.teacher_remap)
        return net.to(device)

    def _logits(
        self,
        key: str,
        src: Any,
        model_name: str | None,
        kwargs: dict[str, Any],
        split: Any,
        device: torch.device | str,
    ) -> Tensor:
        net = self._build(key, src, model_name, kwargs, split, device)
        if self.teacher_view == "augmented":  # kept to see each batch's augmented view
            self._nets[key] = net.eval()
        z = teacher_logits(net, split.images, device, self.batch_size)
        k = _num_classes(split)
        if z.dim() != 2 or z.shape[1] != k:
            got = z.shape[1] if z.dim() == 2 else tuple(z.shape)
            raise ConfigError(
                f"objective 'distill': {key} outputs {got} classes but the training data has {k}"
            )
        if not bool(torch.isfinite(z).all()):
            raise ConfigError(f"objective 'distill': {key} produced non-finite logits")
        return z

    def setup(self, model: nn.Module, train_split: Any, device: torch.device | str) -> None:
        """Compute (and manipulate, unless ``redraw``) the teacher logits of every index."""
        self._targets = self._z_at = self._z_std = self._pool = self._gaps = None
        self._nets = {}
        m = self.manipulation
        if m == "hard_labels":
            return
        if m in NEEDS_STD:
            self._z_std = self._logits(
                "std_teacher",
                self.std_teacher,
                self.std_teacher_model,
                self.std_teacher_kwargs,
                train_split,
                device,
            )
        if m == "standard_teacher":
            self._targets = self._z_std
            return
        self._z_at = self._logits(
            "teacher", self.teacher, self.teacher_model, self.teacher_kwargs, train_split, device
        )
        self._pool = non_max_values(self._z_at).reshape(-1)
        self._gaps = top2_gap(self._z_at)
        if not self.redraw or m in ("none", "mean", "std_order"):  # deterministic ones
            g = torch.Generator(device=self._z_at.device)
            g.manual_seed(self.seed)
            self._targets = self._manipulate(self._z_at, self._z_std, g)

    def _manipulate(self, z: Tensor, z_std: Tensor | None, g: torch.Generator | None) -> Tensor:
        return manipulate(self.manipulation, z, g, pool=self._pool, gaps=self._gaps, z_std=z_std)

    def teacher_targets(self, index: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The (manipulated) teacher logits for training indices ``index``."""
        if self._targets is None and self._z_at is None:
            raise RobustlabError(
                "objective 'distill': call setup(model, train_split, device) before training"
            )
        if self._targets is not None:
            return self._targets[index.to(self._targets.device)]
        assert self._z_at is not None
        idx = index.to(self._z_at.device)
        z_std = self._z_std[idx] if self._z_std is not None else None
        return self._manipulate(self._z_at[idx], z_std, generator)

    def view_targets(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The (manipulated) teacher logits on ``x`` itself (``teacher_view: augmented``)."""
        if not self._nets:
            raise RobustlabError(
                "objective 'distill': call setup(model, train_split, device) before training"
            )
        with torch.no_grad():
            z_std = self._nets["std_teacher"](x).float() if "std_teacher" in self._nets else None
            if self.manipulation == "standard_teacher":
                assert z_std is not None
                return z_std
            z = self._nets["teacher"](x).float()
        return self._manipulate(z, z_std, generator)

    def forward(
        self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor | None, state: StepState
    ) -> tuple[Tensor, Logs]:
        logits = model(x)
        if self.manipulation == "hard_labels":
            ce = F.cross_entropy(logits, y)
            return ce, {"ce": ce.detach(), "acc": accuracy(logits, y)}
        if self.teacher_view == "augmented":
            zt = self.view_targets(x, state.generator).to(logits.device, logits.dtype)
        elif index is None:
            raise RobustlabError("objective 'distill' needs the batch's training-set indices")
        else:
            zt = self.teacher_targets(index, state.generator).to(logits.device, logits.dtype)
        loss, logs = distill_loss(logits, zt, y, self.tau, self.alpha, self.weighting)
        logs["acc"] = accuracy(logits, y)
        logs["teacher_agree"] = (zt.argmax(1) == logits.detach().argmax(1)).float().mean()
        return loss, logs
