"""The architectures of the model zoo of Shi et al., arXiv:1906.02494
(``PerformanceVSadversarial/models``).

- ``resnet20x{1,5,10}`` / ``resnet32x{1,5,10}``: the CIFAR ResNets of He et al. (2016), three
  stages of 3 (ResNet-20) or 5 (ResNet-32) basic blocks at widths 16w, 32w, 64w (the 16-channel
  stem is not widened), projection (1x1 conv + norm) shortcuts where the shape changes, global
  average pooling, one linear layer. Module names follow the authors' ``resnet_cifar.py``
  (``conv1``, ``bn1``, ``layerK.i.{conv1,bn1,conv2,bn2,downsample}``, ``fc``), so their state
  dicts load directly.
- ``vgg{11,13,16}_relu`` / ``vgg{11,13,16}_linear`` / ``vgg13_pure_linear``: VGG feature stacks
  of 3x3 convs with biases and no normalization layer, followed by one linear layer on the
  512 features: ``relu`` has a ReLU after every conv and max-pooling; ``linear`` has no
  activation (max-pooling is the only non-linearity); ``pure_linear`` uses average pooling
  (the whole network is linear). Names follow the authors' ``vgg.py`` (``features.N``,
  ``classifier``).

Weights are initialized as in the authors' code: He-normal (fan-out) convolutions, unit/zero
BatchNorm, VGG linear layer N(0, 0.01) with zero bias. The authors feed raw [0, 1] images (no
normalization in their loaders); robustlab's default applies the dataset's mean/std inside the
model like its other architectures (``input_norm: none`` reproduces the authors' input).
"""

from __future__ import annotations

from torch import Tensor, nn

from robustlab.errors import ConfigError
from robustlab.models.layers import ImageClassifier, init_conv_norm, make_act, make_norm
from robustlab.models.registry import register_model

__all__ = ["CifarResNet", "PaperVGG", "VGG_CONFIGS"]

VGG_CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M"]
    + [512, 512, 512, "M", 512, 512, 512, "M"],
}


class _Block(nn.Module):
    """conv-norm-act, conv-norm, plus the (downsampled) input, then act."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: str, act: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = make_norm(norm, c_out)
        self.act1 = make_act(act)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = make_norm(norm, c_out)
        self.act2 = make_act(act)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), make_norm(norm, c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        res = x if self.downsample is None else self.downsample(x)
        return self.act2(out + res)


class CifarResNet(ImageClassifier):
    """CIFAR ResNet (6n+2 layers) at width factor ``width`` (the zoo: ResNet-20/32 x1, x5, x10)."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: int = 32,
        norm: str = "bn",
        act: str = "relu",
        depth: int = 20,
        width: int = 1,
    ) -> None:
        super().__init__(num_classes, in_channels, input_size)
        if depth < 8 or (depth - 2) % 6:
            raise ConfigError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, ...), got {depth}")
        if width < 1:
            raise ConfigError(f"CIFAR ResNet width must be a positive integer, got {width}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = make_norm(norm, 16)
        self.act = make_act(act)
        c = 16
        for i, (planes, stride) in enumerate(((16, 1), (32, 2), (64, 2)), start=1):
            blocks = []
            for j in range(n):
                blocks.append(_Block(c, planes * width, stride if j == 0 else 1, norm, act))
                c = planes * width
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        init_conv_norm(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.bn1(self.conv1(self.normalize(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.pool(x).flatten(1))


class PaperVGG(ImageClassifier):
    """VGG of the zoo: ``variant`` relu | linear | pure_linear, no normalization layer."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: int = 32,
        norm: str = "none",
        act: str = "relu",
        config: str = "vgg11",
        variant: str = "relu",
    ) -> None:
        super().__init__(num_classes, in_channels, input_size)
        if config not in VGG_CONFIGS:
            raise ConfigError(f"unknown VGG config {config!r}; choose {', '.join(VGG_CONFIGS)}")
        if variant not in ("relu", "linear", "pure_linear"):
            raise ConfigError(f"VGG variant {variant!r}: choose relu, linear or pure_linear")
        if input_size != 32:
            raise ConfigError(f"the zoo's VGG takes 32x32 images (512 features), got {input_size}")
        layers: list[nn.Module] = []
        c = in_channels
        for v in VGG_CONFIGS[config]:
            if v == "M":
                pool = nn.AvgPool2d if variant == "pure_linear" else nn.MaxPool2d
                layers.append(pool(kernel_size=2, stride=2))
            else:
                layers.append(nn.Conv2d(c, int(v), 3, padding=1))
                if norm != "none":
                    layers.append(make_norm(norm, int(v)))
                if variant == "relu":
                    layers.append(make_act(act))
                c = int(v)
        layers.append(nn.AvgPool2d(kernel_size=1, stride=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(512, num_classes)
        init_conv_norm(self)
        for m in self.features:
            if isinstance(m, nn.Conv2d) and m.bias is not None:
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.classifier.weight, 0.0, 0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(self.normalize(x)).flatten(1))


def _register_resnets() -> None:
    for depth in (20, 32):
        for width in (1, 5, 10):

            def build(depth: int = depth, width: int = width, **kw: object) -> CifarResNet:
                return CifarResNet(depth=depth, width=width, **kw)  # type: ignore[arg-type]

            build.__doc__ = f"ResNet-{depth} x{width} of the zoo (CIFAR, widths x{width})."
            register_model(f"resnet{depth}x{width}", norm="bn")(build)


def _register_vggs() -> None:
    names = [("vgg11", "relu"), ("vgg11", "linear"), ("vgg13", "pure_linear")]
    names += [("vgg13", "linear"), ("vgg13", "relu"), ("vgg16", "linear"), ("vgg16", "relu")]
    for config, variant in names:

        def build(config: str = config, variant: str = variant, **kw: object) -> PaperVGG:
            return PaperVGG(config=config, variant=variant, **kw)  # type: ignore[arg-type]

        build.__doc__ = f"{config.upper()} ({variant}) of the zoo: no normalization layer."
        register_model(f"{config}_{variant}", norm="none")(build)


_register_resnets()
_register_vggs()
