"""Building blocks shared by the architectures: input normalization, norm and activation layers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from robustlab.errors import ConfigError

NORMS = ("bn", "gn", "none")
ACTS = ("relu", "silu")


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, for inputs in [0, 1].

    The constants are non-persistent buffers: they follow ``.to(device)`` but are not part of
    the state dict, so checkpoints keep the layout of the original (unnormalized) architecture.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor(list(mean), dtype=torch.float32)
        std_t = torch.as_tensor(list(std), dtype=torch.float32)
        if mean_t.dim() != 1 or mean_t.shape != std_t.shape or mean_t.numel() == 0:
            raise ConfigError(
                f"normalization mean and std must be equal-length lists, got {len(mean_t)} "
                f"and {len(std_t)} values"
            )
        if bool((std_t <= 0).any()):
            raise ConfigError(f"normalization std must be positive, got {std_t.tolist()}")
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std_t.view(1, -1, 1, 1), persistent=False)
        self.identity = bool((mean_t == 0).all() and (std_t == 1).all())

    def forward(self, x: Tensor) -> Tensor:
        if self.identity:
            return x
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        m = [round(v, 4) for v in self.mean.flatten().tolist()]
        s = [round(v, 4) for v in self.std.flatten().tolist()]
        return f"mean={m}, std={s}"


def check_norm(norm: str) -> str:
    """Return ``norm`` if it is a known normalization layer kind, else raise ConfigError."""
    if norm not in NORMS:
        raise ConfigError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
    return norm


def check_act(act: str) -> str:
    """Return ``act`` if it is a known activation, else raise ConfigError."""
    if act not in ACTS:
        raise ConfigError(f"unknown activation {act!r}; choose one of {', '.join(ACTS)}")
    return act


def gn_groups(channels: int) -> int:
    """Number of GroupNorm groups: at most 32, at least 4 channels per group, dividing evenly."""
    g = max(1, min(32, channels // 4))
    while channels % g:
        g -= 1
    return g


def make_norm(norm: str, channels: int) -> nn.Module:
    """A 2-D normalization layer: BatchNorm (``bn``), GroupNorm (``gn``) or none."""
    check_norm(norm)
    if norm == "bn":
        return nn.BatchNorm2d(channels)
    if norm == "gn":
        return nn.GroupNorm(gn_groups(channels), channels)
    return nn.Identity()


def make_act(act: str) -> nn.Module:
    """An activation module (never in-place, so activations can be inspected by hooks)."""
    check_act(act)
    return nn.ReLU() if act == "relu" else nn.SiLU()


def init_conv_norm(model: nn.Module, zero_linear_bias: bool = False) -> None:
    """He-normal (fan-out) conv weights, unit/zero norm affine parameters, in module order;
    optionally zero every linear bias (the Wide ResNet convention)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and zero_linear_bias:
            nn.init.zeros_(m.bias)


class ImageClassifier(nn.Module):
    """Base class of every model: [0, 1] images in, logits out, normalization inside.

    Attributes ``num_classes``, ``in_channels`` and ``input_size`` describe the expected input;
    subclasses call ``self.normalize(x)`` first in ``forward``.
    """

    def __init__(self, num_classes: int, in_channels: int, input_size: int) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        self.input_size = int(input_size)
        self.normalize = Normalize([0.0] * in_channels, [1.0] * in_channels)

    def set_normalization(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Replace the input normalization constants (one value per input channel)."""
        norm = Normalize(mean, std)
        if norm.mean.shape[1] != self.in_channels:
            raise ConfigError(
                f"normalization has {norm.mean.shape[1]} channels but the model takes "
                f"{self.in_channels} input channels"
            )
        device = next((p.device for p in self.parameters()), torch.device("cpu"))
        self.normalize = norm.to(device)
