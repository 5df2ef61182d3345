"""Paper C's architectures in the registry: ResNet-20/32 at widths x1, x5, x10 and the VGG
variants of the authors' zoo (names, sizes, key layout, linearity of the linear variants), and
the BatchNorm momentum option."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlab.errors import ConfigError
from robustlab.models import available_models, create_model

RESNETS = [f"resnet{d}x{w}" for d in (20, 32) for w in (1, 5, 10)]
VGGS = ["vgg11_relu", "vgg11_linear", "vgg13_pure_linear", "vgg13_linear", "vgg13_relu"]
VGGS += ["vgg16_linear", "vgg16_relu"]


def test_paper_c_zoo_is_registered() -> None:
    names = available_models()
    for n in RESNETS + VGGS:
        assert n in names, n


@pytest.mark.parametrize("depth,blocks", [(20, 3), (32, 5)])
def test_cifar_resnet_layout_and_size(depth: int, blocks: int) -> None:
    m = create_model(f"resnet{depth}x1", dataset="cifar10")
    convs = [mod for mod in m.modules() if isinstance(mod, nn.Conv2d) and mod.kernel_size == (3, 3)]
    assert len(convs) + 1 == depth  # 6n+1 3x3 convs plus the linear layer
    keys = set(m.state_dict())
    # the authors' resnet_cifar.py names: conv1/bn1, layerK.i.{conv,bn}N, downsample, fc
    for k in ("conv1.weight", "bn1.running_mean", f"layer1.{blocks - 1}.conv2.weight"):
        assert k in keys, k
    assert "layer2.0.downsample.0.weight" in keys and "layer2.0.downsample.1.weight" in keys
    assert "layer1.0.downsample.0.weight" not in keys and "fc.weight" in keys
    if depth == 20:  # ResNet-20: 0.27M parameters (He et al. 2016)
        assert sum(p.numel() for p in m.parameters()) == 272_474
    assert m(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_width_factor_widens_every_stage_but_the_stem() -> None:
    for w in (1, 5, 10):
        m = create_model(f"resnet20x{w}", num_classes=10)
        assert m.conv1.out_channels == 16
        assert [m.layer1[0].conv1.out_channels, m.layer3[0].conv1.out_channels] == [16 * w, 64 * w]
        assert m.fc.in_features == 64 * w


def test_vgg_variants_layout_and_linearity() -> None:
    x, x2 = torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32)
    relu = create_model("vgg11_relu", num_classes=10)
    assert any(isinstance(mod, nn.ReLU) for mod in relu.features)
    assert "features.0.weight" in relu.state_dict() and "features.3.weight" in relu.state_dict()
    assert relu.classifier.in_features == 512
    assert not any(isinstance(m, nn.BatchNorm2d) for m in relu.modules())
    lin = create_model("vgg13_linear", num_classes=10)
    assert not any(isinstance(mod, (nn.ReLU, nn.SiLU)) for mod in lin.modules())
    assert any(isinstance(mod, nn.MaxPool2d) for mod in lin.features)
    pure = create_model("vgg13_pure_linear", num_classes=10).double()
    a, b = x.double(), x2.double()
    # a fully linear (affine) network: f(a) + f(b) - f(0) == f(a + b)
    zero = torch.zeros_like(a)
    torch.testing.assert_close(pure(a) + pure(b) - pure(zero), pure(a + b))
    n16 = sum(
        1 for m in create_model("vgg16_relu", num_classes=10).modules() if isinstance(m, nn.Conv2d)
    )
    assert n16 == 13


def test_bn_momentum_option_and_errors() -> None:
    m = create_model("resnet20x1", dataset="cifar10", bn_momentum=0.01)
    bns = [mod for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)]
    assert bns and all(b.momentum == 0.01 for b in bns)
    assert all(
        b.momentum == 0.1
        for b in create_model("resnet20x1").modules()
        if isinstance(b, nn.BatchNorm2d)
    )
    with pytest.raises(ConfigError, match="bn_momentum"):
        create_model("resnet20x1", bn_momentum=1.5)
    with pytest.raises(ConfigError, match="32x32"):
        create_model("vgg11_relu", dataset="mnist", in_channels=3)
