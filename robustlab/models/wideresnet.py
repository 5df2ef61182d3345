"""Wide ResNets (Zagoruyko & Komodakis, 2016): ``wideresnet`` (any depth/width), ``wrn28_10``,
``wrn34_10``.

Module names follow the layout of the TRADES/MART/RobustBench implementations (``conv1``,
``block1.layer.0.bn1`` ... ``convShortcut``, final ``bn1`` and ``fc``), so their checkpoints
load without remapping; ``sub_block1=True`` adds TRADES' unused extra block for WRN-34-10 files.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from robustlab.errors import ConfigError
from robustlab.models.layers import ImageClassifier, init_conv_norm, make_act, make_norm
from robustlab.models.registry import register_model


class WideBlock(nn.Module):
    """Pre-activation wide block; when the width changes the shortcut is a strided 1x1 conv
    applied to the activated input."""

    def __init__(
        self, c_in: int, c_out: int, stride: int, norm: str, act: str, drop: float
    ) -> None:
        super().__init__()
        self.bn1 = make_norm(norm, c_in)
        self.relu1 = make_act(act)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = make_norm(norm, c_out)
        self.relu2 = make_act(act)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.drop = float(drop)
        self.equal_in_out = c_in == c_out and stride == 1
        self.convShortcut = (
            None
            if self.equal_in_out
            else nn.Conv2d(c_in, c_out, 1, stride=stride, padding=0, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        o = self.relu1(self.bn1(x))
        shortcut = x if self.convShortcut is None else self.convShortcut(o)
        out = self.relu2(self.bn2(self.conv1(o)))
        if self.drop > 0:
            out = F.dropout(out, p=self.drop, training=self.training)
        return self.conv2(out) + shortcut


class NetworkBlock(nn.Module):
    """``n`` wide blocks; the first one may change width and stride."""

    def __init__(
        self, n: int, c_in: int, c_out: int, stride: int, norm: str, act: str, drop: float
    ) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[
                WideBlock(
                    c_in if i == 0 else c_out, c_out, stride if i == 0 else 1, norm, act, drop
                )
                for i in range(n)
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


@register_model("wideresnet", norm="bn")
class WideResNet(ImageClassifier):
    """Wide ResNet WRN-depth-widen_factor (depth = 6n + 4), pre-activation blocks."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: int = 32,
        norm: str = "bn",
        act: str = "relu",
        depth: int = 28,
        widen_factor: int = 10,
        drop: float = 0.0,
        sub_block1: bool = False,
    ) -> None:
        super().__init__(num_classes, in_channels, input_size)
        if depth < 10 or (depth - 4) % 6:
            raise ConfigError(
                f"wideresnet depth must be 6n + 4 (10, 16, 22, 28, 34, ...), got {depth}"
            )
        if widen_factor < 1:
            raise ConfigError(f"wideresnet widen_factor must be >= 1, got {widen_factor}")
        n = (depth - 4) // 6
        c = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.depth, self.widen_factor = int(depth), int(widen_factor)
        self.conv1 = nn.Conv2d(in_channels, c[0], 3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, c[0], c[1], 1, norm, act, drop)
        if sub_block1:
            self.sub_block1 = NetworkBlock(n, c[0], c[1], 1, norm, act, drop)  # unused (TRADES)
        self.block2 = NetworkBlock(n, c[1], c[2], 2, norm, act, drop)
        self.block3 = NetworkBlock(n, c[2], c[3], 2, norm, act, drop)
        self.bn1 = make_norm(norm, c[3])
        self.relu = make_act(act)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c[3], num_classes)
        init_conv_norm(self, zero_linear_bias=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(self.normalize(x))
        out = self.block3(self.block2(self.block1(out)))
        out = self.relu(self.bn1(out))
        return self.fc(self.pool(out).flatten(1))


@register_model("wrn28_10", norm="bn")
class WRN28_10(WideResNet):
    """WRN-28-10 (36.5M parameters)."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: int = 32,
        norm: str = "bn",
        act: str = "relu",
        drop: float = 0.0,
    ) -> None:
        super().__init__(num_classes, in_channels, input_size, norm, act, 28, 10, drop)


@register_model("wrn34_10", norm="bn")
class WRN34_10(WideResNet):
    """WRN-34-10 (46.2M parameters), the TRADES/MART CIFAR-10 model."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: int = 32,
        norm: str = "bn",
        act: str = "relu",
        drop: float = 0.0,
        sub_block1: bool = False,
    ) -> None:
        super().__init__(num_classes, in_channels, input_size, norm, act, 34, 10, drop, sub_block1)
