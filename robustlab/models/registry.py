"""The model registry and factory: ``create_model(name, dataset=...)`` builds any architecture."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from robustlab.errors import ConfigError, RobustlabError
from robustlab.models.layers import ImageClassifier, check_act, check_norm

__all__ = [
    "ModelSpec",
    "register_model",
    "create_model",
    "available_models",
    "model_spec",
    "parse_input_norm",
    "input_normalization",
    "describe_input_norm",
    "INPUT_NORM_HELP",
]

INPUT_NORM_HELP = (
    "auto (the architecture's default), dataset (the dataset's mean/std), none (raw [0, 1] "
    "inputs) or MEAN,STD (one value each, or one per channel: M1,M2,M3,S1,S2,S3)"
)

Builder = Callable[..., ImageClassifier]
B = TypeVar("B", bound=Builder)


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture: its builder and the input it expects when no dataset is given.

    ``dataset_normalization`` False means the model is used on raw [0, 1] inputs by default
    (mean 0, std 1) even when a dataset is named, as its published checkpoints expect.
    """

    name: str
    builder: Builder
    num_classes: int = 10
    in_channels: int = 3
    input_size: int = 32
    norm: str = "bn"
    dataset_normalization: bool = True
    description: str = ""


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    norm: str = "bn",
    dataset_normalization: bool = True,
) -> Callable[[B], B]:
    """Decorator registering a model class (or builder) called with ``num_classes, in_channels,
    input_size, norm, act`` and its own keyword options.

    The keyword defaults describe the input the model expects when ``create_model`` is called
    without a dataset; ``norm`` is the architecture's default normalization layer.
    """

    def deco(builder: B) -> B:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        doc = (inspect.getdoc(builder) or "").strip().splitlines()
        _REGISTRY[name] = ModelSpec(
            name=name,
            builder=builder,
            num_classes=num_classes,
            in_channels=in_channels,
            input_size=input_size,
            norm=norm,
            dataset_normalization=dataset_normalization,
            description=doc[0] if doc else "",
        )
        return builder

    return deco


def available_models() -> list[str]:
    """Names of all registered architectures, sorted."""
    return sorted(_REGISTRY)


def model_spec(name: str) -> ModelSpec:
    """The registry entry of ``name``; unknown names raise an error listing the known ones."""
    if name not in _REGISTRY:
        raise RobustlabError(
            f"unknown model {name!r}; available models: {', '.join(available_models())}"
        )
    return _REGISTRY[name]


def _dataset_defaults(dataset: str) -> tuple[int, int, int, tuple[float, ...], tuple[float, ...]]:
    """(num_classes, channels, size, mean, std) of ``dataset``, from robustlab.data."""
    from robustlab.data import dataset_info  # same layer; imported late to keep imports light

    info = dataset_info(dataset)
    channels, _, width = info.shape
    return info.num_classes, channels, width, tuple(info.mean), tuple(info.std)


def create_model(
    name: str,
    dataset: str | None = None,
    num_classes: int | None = None,
    in_channels: int | None = None,
    norm: str | None = None,
    act: str = "relu",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    input_size: int | None = None,
    seed: int | None = None,
    input_norm: str | None = None,
    bn_momentum: float | None = None,
    **kw: Any,
) -> nn.Module:
    """Build architecture ``name`` taking [0, 1] images and returning logits.

    ``dataset`` supplies the number of classes, input channels, image size and normalization
    constants; explicit arguments override it. ``norm`` is ``"bn"``, ``"gn"`` or ``"none"``
    (None: the architecture's default), ``act`` is ``"relu"`` or ``"silu"``. Extra keywords
    go to the architecture (e.g. ``depth``/``widen_factor`` for ``wideresnet``). ``seed``
    makes the weight initialization reproducible without touching the global RNG (None: draw
    from the global torch RNG). ``input_norm`` (see :func:`parse_input_norm`) chooses the
    normalization applied inside the model: ``auto``/None the architecture's default (the
    dataset's mean/std unless the architecture is registered for raw inputs), ``dataset``,
    ``none`` or explicit ``"MEAN,STD"``; it cannot be combined with ``mean``/``std``.
    ``bn_momentum`` sets every BatchNorm layer's momentum (PyTorch convention: the weight of
    the new batch; DyART's authors use 0.01).
    """
    spec = model_spec(name)
    n_cls, ch, size = spec.num_classes, spec.in_channels, spec.input_size
    d_mean: tuple[float, ...] | None = None
    d_std: tuple[float, ...] | None = None
    if dataset is not None:
        n_cls, ch, size, d_mean, d_std = _dataset_defaults(dataset)
    n_cls = int(num_classes) if num_classes is not None else n_cls
    ch = int(in_channels) if in_channels is not None else ch
    size = int(input_size) if input_size is not None else size
    if n_cls < 1 or ch < 1 or size < 1:
        raise ConfigError(
            f"model {name!r}: num_classes, in_channels and input_size must be positive, got "
            f"{n_cls}, {ch}, {size}"
        )
    norm = check_norm(norm if norm is not None else spec.norm)
    act = check_act(act)
    params = inspect.signature(spec.builder).parameters
    accepts_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    fixed = {"num_classes", "in_channels", "input_size", "norm", "act"}
    allowed = sorted(set(params) - fixed)
    bad = sorted(k for k in kw if k not in params or k in fixed)
    if bad and not accepts_var_kw:
        hint = f"; it accepts {', '.join(allowed)}" if allowed else ""
        raise ConfigError(f"model {name!r} got unknown option(s) {', '.join(bad)}{hint}")
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(int(seed))
        try:
            model = spec.builder(
                num_classes=n_cls, in_channels=ch, input_size=size, norm=norm, act=act, **kw
            )
        except (TypeError, ValueError) as e:
            if not kw:
                raise
            opts = ", ".join(f"{k}={v!r}" for k, v in kw.items())
            raise ConfigError(f"model {name!r} cannot be built with {opts}: {e}") from None
    mode, values = parse_input_norm(input_norm, ch)
    if mean is not None or std is not None:
        if mean is None or std is None:
            raise ConfigError("give both mean and std for the input normalization, or neither")
        if mode != "auto":
            raise ConfigError("give input_norm or mean/std, not both")
        model.set_normalization(_per_channel(mean, ch, "mean"), _per_channel(std, ch, "std"))
    elif mode == "values":
        model.set_normalization(*values)
    elif mode == "dataset" and d_mean is None:
        raise ConfigError(f"input_norm 'dataset' needs a dataset (model {name!r} got none)")
    elif d_mean is not None and d_std is not None and mode != "none":
        if mode == "dataset" or spec.dataset_normalization:
            model.set_normalization(_per_channel(d_mean, ch), _per_channel(d_std, ch, "std"))
    if bn_momentum is not None:
        if not 0.0 <= float(bn_momentum) <= 1.0:
            raise ConfigError(f"bn_momentum must be in [0, 1], got {bn_momentum!r}")
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = float(bn_momentum)
    model.arch = name
    return model


def parse_input_norm(
    value: str | None, channels: int
) -> tuple[str, tuple[list[float], list[float]] | None]:
    """``(mode, (mean, std) or None)`` from an ``input_norm`` setting.

    Modes: ``auto`` (None or "auto"), ``dataset``, ``none``, ``values`` (``"MEAN,STD"``: two
    numbers broadcast to every channel, or ``2 * channels`` numbers, the means then the stds;
    fractions such as ``0.5/1`` are not accepted, decimals are).
    """
    if value is None:
        return "auto", None
    text = str(value).strip().lower()
    if text in ("auto", "dataset", "none"):
        return text, None
    try:
        nums = [float(v) for v in text.split(",")]
    except ValueError:
        nums = []
    if len(nums) == 2:
        return "values", ([nums[0]] * channels, [nums[1]] * channels)
    if len(nums) == 2 * channels and channels > 1:
        return "values", (nums[:channels], nums[channels:])
    raise ConfigError(f"input_norm {value!r}: choose {INPUT_NORM_HELP}")


def input_normalization(model: nn.Module) -> dict[str, Any]:
    """What the model does to its [0, 1] input before the first layer, for printing and
    recording: ``{"applied": bool, "mean": [...], "std": [...]}`` (``applied`` False: the
    model sees raw [0, 1] inputs, or it has no robustlab normalization layer)."""
    norm = getattr(model, "normalize", None)
    if norm is None or not hasattr(norm, "mean"):
        return {"applied": False, "mean": None, "std": None, "note": "no robustlab Normalize"}
    mean = [round(float(v), 6) for v in norm.mean.flatten().tolist()]
    std = [round(float(v), 6) for v in norm.std.flatten().tolist()]
    return {"applied": not bool(getattr(norm, "identity", False)), "mean": mean, "std": std}


def describe_input_norm(model: nn.Module) -> str:
    """One line: the normalization the model applies (for CLI output)."""
    info = input_normalization(model)
    if not info["applied"]:
        return "input normalization: none (the model sees raw [0, 1] inputs)"
    return f"input normalization: (x - {info['mean']}) / {info['std']} inside the model"


def _per_channel(values: Sequence[float] | float, channels: int, what: str = "mean") -> list[float]:
    """Broadcast a scalar or a one-value list to ``channels`` values."""
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        return [float(values)] * channels
    try:
        if isinstance(values, (str, bool)):
            raise TypeError
        vals = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ConfigError(
            f"{what} must be a number or a list of {channels} numbers (one per channel), "
            f"got {values!r}"
        ) from None
    if len(vals) == 1:
        return vals * channels
    return vals
