"""Small CNNs for CPU-scale work: TRADES ``smallcnn``, ``lenet5`` (MNIST) and ``cifar_cnn``."""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from robustlab.errors import ConfigError
from robustlab.models.layers import ImageClassifier, make_act, make_norm
from robustlab.models.registry import register_model


def _check_size(name: str, size: int, minimum: int) -> None:
    if size < minimum:
        raise ConfigError(f"{name} needs inputs of at least {minimum}x{minimum}, got {size}")


@register_model("smallcnn", in_channels=1, input_size=28, norm="none", dataset_normalization=False)
class SmallCNN(ImageClassifier):
    """The TRADES SmallCNN (Zhang et al., 2019): 4 conv + 3 fc layers, dropout in the classifier.

    Module names match the authors' state dict: ``feature_extractor.conv1..conv4``,
    ``classifier.fc1..fc3``. Optional norm layers (``bn1..bn4``) follow the convolutions.
    TRADES' ``num_channels`` is ``in_channels`` here; ``widths`` are the conv widths.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        input_size: int = 28,
        norm: str = "none",
        act: str = "relu",
        widths: tuple[int, int] = (32, 64),
        hidden: int = 200,
        drop: float = 0.5,
    ) -> None:
        super().__init__(num_classes, in_channels, input_size)
        _check_size("smallcnn", input_size, 12)
        c1, c2 = widths
        layers: list[tuple[str, nn.Module]] = []
        c_in = in_channels
        for i, c_out in enumerate((c1, c1, c2, c2), start=1):
            layers.append((f"conv{i}", nn.Conv2d(c_in, c_out, 3)))
            if norm != "none":
                layers.append((f"bn{i}", make_norm(norm, c_out)))
            layers.append((f"relu{i}", make_act(act)))
            if i % 2 == 0:
                layers.append((f"maxpool{i // 2}", nn.MaxPool2d(2, 2)))
            c_in = c_out
        self.feature_extractor = nn.Sequential(OrderedDict(layers))
        s = ((input_size - 4) // 2 - 4) // 2
        self.classifier = nn.Sequential(
            OrderedDict(
                [
                    ("fc1", nn.Linear(c2 * s * s, hidden)),
                    ("relu1", make_act(act)),
                    ("drop", nn.Dropout(drop)),
                    ("fc2", nn.Linear(hidden, hidden)),
                    ("relu2", make_act(act)),
                    ("fc3", nn.Linear(hidden, num_classes)),
                ]
            )
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.classifier.fc3.weight)
        nn.init.zeros_(self.classifier.fc3.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.feature_extractor(self.normalize(x))
        return self.classifier(x.flatten(1))


@register_model("lenet5", in_channels=1, input_size=28, norm="none")
class LeNet5(ImageClassifier):
    """The MNIST CNN of Madry et al.: two 3x3 convs (32, 64) with max-pooling, fc 200, fc 10."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        input_size: int = 28,
        norm: str = "none",
        act: str = "relu",
        hidden: int = 200,
    ) -> None:
        super().__init__(num_classes, in_channels, input_size)
        _check_size("lenet5", input_size, 4)
        self.conv1 = nn.Conv2d(in_channels, 32, 3, padding=1)
        self.bn1 = make_norm(norm, 32)
        self.act1 = make_act(act)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.bn2 = make_norm(norm, 64)
        self.act2 = make_act(act)
        self.pool = nn.MaxPool2d(2)
        s = input_size // 2 // 2
        self.fc1 = nn.Linear(64 * s * s, hidden)
        self.act3 = make_act(act)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.normalize(x)
        x = self.pool(self.act1(self.bn1(self.conv1(x))))
        x = self.pool(self.act2(self.bn2(self.conv2(x))))
        return self.fc2(self.act3(self.fc1(x.flatten(1))))


@register_model("cifar_cnn", in_channels=3, input_size=32, norm="bn")
class CifarCNN(ImageClassifier):
    """A small fast CNN for 32x32 images (~0.28M parameters): five 3x3 convs, three max-pools.

    Widths ``width``, 2x, 2x, 4x, 4x (default 32); a global average pool feeds the linear head,
    so any input size of at least 8x8 works.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: int = 32,
        norm: str = "bn",
        act: str = "relu",
        width: int = 32,
    ) -> None:
        super().__init__(num_classes, in_channels, input_size)
        _check_size("cifar_cnn", input_size, 8)
        w = int(width)

        def unit(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=norm == "none"),
                    make_norm(norm, c_out), make_act(act)]  # fmt: skip

        self.features = nn.Sequential(
            *unit(in_channels, w),
            nn.MaxPool2d(2),
            *unit(w, 2 * w),
            *unit(2 * w, 2 * w),
            nn.MaxPool2d(2),
            *unit(2 * w, 4 * w),
            *unit(4 * w, 4 * w),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(1),
        )
        self.fc = nn.Linear(4 * w, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(self.normalize(x)).flatten(1))
