"""CIFAR-style ResNet-18 and PreAct ResNet-18 (3x3 stem, no max-pool), with bn|gn and relu|silu.

Module names follow the widely used CIFAR implementations (``conv1``, ``bn1``, ``layerK.i``,
``shortcut``, ``linear``; PreAct adds the final ``bn``) so their checkpoints load directly.
"""

from __future__ import annotations

from torch import Tensor, nn

from robustlab.models.layers import ImageClassifier, init_conv_norm, make_act, make_norm
from robustlab.models.registry import register_model


class BasicBlock(nn.Module):
    """conv-norm-act, conv-norm, plus (projected) shortcut, then act."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: str, act: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = make_norm(norm, c_out)
        self.act1 = make_act(act)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = make_norm(norm, c_out)
        self.act2 = make_act(act)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), make_norm(norm, c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation block: norm-act-conv twice; the shortcut branches after the first act."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: str, act: str) -> None:
        super().__init__()
        self.bn1 = make_norm(norm, c_in)
        self.act1 = make_act(act)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = make_norm(norm, c_out)
        self.act2 = make_act(act)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(self.act2(self.bn2(out)))
        return out + shortcut


def _add_stages(model: nn.Module, block: type[nn.Module], w: int, norm: str, act: str) -> int:
    """``layer1`` ... ``layer4``: two blocks each, widths w, 2w, 4w, 8w; returns the last width."""
    c = w
    for i, (mult, stride) in enumerate(((1, 1), (2, 2), (4, 2), (8, 2)), start=1):
        blocks = [block(c, w * mult, stride, norm, act), block(w * mult, w * mult, 1, norm, act)]
        setattr(model, f"layer{i}", nn.Sequential(*blocks))
        c = w * mult
    return c


@register_model("resnet18", norm="bn")
class ResNet18(ImageClassifier):
    """ResNet-18 for small images (He et al., 2016; CIFAR stem): 11.2M parameters at width 64."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: int = 32,
        norm: str = "bn",
        act: str = "relu",
        width: int = 64,
    ) -> None:
        super().__init__(num_classes, in_channels, input_size)
        w = int(width)
        self.conv1 = nn.Conv2d(in_channels, w, 3, stride=1, padding=1, bias=False)
        self.bn1 = make_norm(norm, w)
        self.act = make_act(act)
        c = _add_stages(self, BasicBlock, w, norm, act)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(c, num_classes)
        init_conv_norm(self)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.bn1(self.conv1(self.normalize(x))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(self.pool(out).flatten(1))


@register_model("preact_resnet18", norm="bn")
class PreActResNet18(ImageClassifier):
    """Pre-activation ResNet-18 (He et al., 2016), the usual fast adversarial-training model."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: int = 32,
        norm: str = "bn",
        act: str = "relu",
        width: int = 64,
    ) -> None:
        super().__init__(num_classes, in_channels, input_size)
        w = int(width)
        self.conv1 = nn.Conv2d(in_channels, w, 3, stride=1, padding=1, bias=False)
        c = _add_stages(self, PreActBlock, w, norm, act)
        self.bn = make_norm(norm, c)
        self.act = make_act(act)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(c, num_classes)
        init_conv_norm(self)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(self.normalize(x))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = self.act(self.bn(out))
        return self.linear(self.pool(out).flatten(1))
