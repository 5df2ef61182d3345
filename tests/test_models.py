"""Model zoo: registry/factory, every architecture's forward pass, norm/act options."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlab.errors import ConfigError, RobustlabError
from robustlab.models import Normalize, available_models, create_model

EXPECTED = {
    "smallcnn",
    "lenet5",
    "cifar_cnn",
    "preact_resnet18",
    "resnet18",
    "wideresnet",
    "wrn28_10",
    "wrn34_10",
}
# Small wideresnet for the generic tests; the named wide models get a single tiny forward.
TINY_KW: dict[str, dict] = {"wideresnet": {"depth": 10, "widen_factor": 1}}
HEAVY = {"wrn28_10", "wrn34_10"}


def test_registry_lists_all_names() -> None:
    assert EXPECTED <= set(available_models())
    assert available_models() == sorted(available_models())


def test_unknown_model_lists_names() -> None:
    with pytest.raises(RobustlabError, match="unknown model 'resnet9000'.*smallcnn"):
        create_model("resnet9000")


def test_unknown_option_is_config_error() -> None:
    with pytest.raises(ConfigError, match="widen_factor"):
        create_model("wideresnet", widen=3)
    with pytest.raises(ConfigError, match="unknown norm"):
        create_model("resnet18", norm="ln")
    with pytest.raises(ConfigError, match="unknown activation"):
        create_model("resnet18", act="gelu")
    with pytest.raises(ConfigError, match="6n"):
        create_model("wideresnet", depth=12)


@pytest.mark.parametrize(
    "name,dataset,shape,classes",
    [
        ("smallcnn", "mnist", (1, 28, 28), 10),
        ("lenet5", "mnist", (1, 28, 28), 10),
        ("lenet5", "cifar10", (3, 32, 32), 10),
        ("smallcnn", "cifar10", (3, 32, 32), 10),
        ("cifar_cnn", "cifar10", (3, 32, 32), 10),
        ("cifar_cnn", "tiny-imagenet", (3, 64, 64), 200),
        ("resnet18", "cifar100", (3, 32, 32), 100),
        ("preact_resnet18", "tiny-imagenet", (3, 64, 64), 200),
        ("preact_resnet18", "mnist", (1, 28, 28), 10),
        ("wideresnet", "svhn", (3, 32, 32), 10),
        ("wideresnet", "fashion-mnist", (1, 28, 28), 10),
        ("wrn28_10", "cifar10", (3, 32, 32), 10),
        ("wrn34_10", "cifar10", (3, 32, 32), 10),
    ],
)
def test_forward_shapes(name: str, dataset: str, shape: tuple, classes: int) -> None:
    model = create_model(name, dataset=dataset, **TINY_KW.get(name, {})).eval()
    n = 2 if name in HEAVY else 3
    x = torch.rand(n, *shape)
    x[0] = 0.0  # the box corners are valid inputs
    x[1] = 1.0
    with torch.no_grad():
        out = model(x)
    assert out.shape == (n, classes)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert model.num_classes == classes and model.in_channels == shape[0]


@pytest.mark.parametrize("name", sorted(EXPECTED - HEAVY))
def test_normalization_buffers_not_in_state_dict(name: str) -> None:
    model = create_model(name, dataset="cifar10", **TINY_KW.get(name, {}))
    keys = model.state_dict().keys()
    assert not any("normalize" in k for k in keys)
    assert isinstance(model.normalize, Normalize)
    buffers = dict(model.named_buffers())
    assert "normalize.mean" in buffers and "normalize.std" in buffers


def test_dataset_normalization_applied_inside() -> None:
    model = create_model("cifar_cnn", dataset="cifar10")
    mean = model.normalize.mean.flatten().tolist()
    std = model.normalize.std.flatten().tolist()
    assert mean == pytest.approx([0.4914, 0.4822, 0.4465], abs=1e-4)
    assert std == pytest.approx([0.2470, 0.2435, 0.2616], abs=1e-4)
    x = torch.full((1, 3, 32, 32), 0.4914)
    assert model.normalize(x)[0, 0].abs().max() < 1e-6
    # the published TRADES model expects raw [0, 1] inputs: no normalization by default
    trades = create_model("smallcnn", dataset="mnist")
    assert trades.normalize.identity
    assert not create_model(
        "smallcnn", dataset="mnist", mean=[0.1307], std=[0.3081]
    ).normalize.identity
    lenet = create_model("lenet5", dataset="mnist")
    assert lenet.normalize.mean.flatten().tolist() == pytest.approx([0.1307], abs=1e-4)


def test_normalization_changes_logits_consistently() -> None:
    torch.manual_seed(0)
    a = create_model("cifar_cnn", dataset="cifar10").eval()
    b = create_model("cifar_cnn", mean=[0.0] * 3, std=[1.0] * 3).eval()
    b.load_state_dict(a.state_dict())
    x = torch.rand(4, 3, 32, 32)
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b((x - mean) / std), rtol=1e-4, atol=1e-4)


def _types(model: nn.Module) -> set[type]:
    return {type(m) for m in model.modules()}


@pytest.mark.parametrize("name", ["cifar_cnn", "resnet18", "preact_resnet18", "wideresnet"])
def test_norm_and_act_options_change_modules(name: str) -> None:
    kw = TINY_KW.get(name, {})
    bn_relu = _types(create_model(name, **kw))
    gn_silu = _types(create_model(name, norm="gn", act="silu", **kw))
    assert nn.BatchNorm2d in bn_relu and nn.GroupNorm not in bn_relu
    assert nn.ReLU in bn_relu and nn.SiLU not in bn_relu
    assert nn.GroupNorm in gn_silu and nn.BatchNorm2d not in gn_silu
    assert nn.SiLU in gn_silu and nn.ReLU not in gn_silu
    gn = create_model(name, norm="gn", **kw)
    for m in gn.modules():
        if isinstance(m, nn.GroupNorm):
            assert m.num_channels % m.num_groups == 0
    x = torch.rand(2, 3, 32, 32)
    gn.train()
    assert gn(x).shape == (2, 10)  # GroupNorm trains on any batch size


def test_smallcnn_layout_and_options() -> None:
    model = create_model("smallcnn")
    keys = list(model.state_dict())
    assert keys[0] == "feature_extractor.conv1.weight"
    assert keys[-1] == "classifier.fc3.bias"
    assert [k for k in keys if k.endswith("weight")] == [
        *(f"feature_extractor.conv{i}.weight" for i in range(1, 5)),
        *(f"classifier.fc{i}.weight" for i in range(1, 4)),
    ]
    assert model.classifier.drop.p == 0.5
    assert create_model("smallcnn", drop=0.2).classifier.drop.p == 0.2
    assert create_model("smallcnn", in_channels=3).feature_extractor.conv1.in_channels == 3
    assert any(isinstance(m, nn.SiLU) for m in create_model("smallcnn", act="silu").modules())
    bn = create_model("smallcnn", norm="bn")
    assert "feature_extractor.bn1.weight" in bn.state_dict()


def test_lenet5_layout() -> None:
    model = create_model("lenet5")
    assert model.fc1.in_features == 3136 and model.fc1.out_features == 200
    assert model.conv1.padding == (1, 1) and model.conv2.out_channels == 64
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == 320 + 18496 + 3136 * 200 + 200 + 2010


def test_parameter_counts_match_literature() -> None:
    # counts from the original papers / reference implementations (CIFAR-10 heads)
    def count(m: nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    assert count(create_model("resnet18")) == 11_173_962
    # kuangliu PreActResNet18 (11,171,146) plus the final BatchNorm of Wong et al. (+1,024)
    assert count(create_model("preact_resnet18")) == 11_172_170
    assert count(create_model("wrn28_10")) == 36_479_194
    assert count(create_model("wrn34_10")) == 46_160_474
    assert 150_000 < count(create_model("cifar_cnn")) < 600_000


def test_wideresnet_depth_width() -> None:
    m = create_model("wideresnet", depth=16, widen_factor=4)
    assert len(m.block1.layer) == 2 and m.fc.in_features == 256
    trades = create_model("wrn34_10", sub_block1=True)
    assert any(k.startswith("sub_block1.") for k in trades.state_dict())


def test_models_move_with_buffers() -> None:
    model = create_model("cifar_cnn", dataset="cifar10").to(torch.float64)
    out = model(torch.rand(2, 3, 32, 32, dtype=torch.float64))
    assert out.dtype == torch.float64


def test_dataset_constants_come_from_robustlab_data() -> None:
    from robustlab.data import available_datasets, dataset_info

    for name in available_datasets():
        info = dataset_info(name)
        model = create_model("cifar_cnn", dataset=name)
        assert model.num_classes == info.num_classes and model.fc.out_features == info.num_classes
        assert (model.in_channels, model.input_size, model.input_size) == info.shape
        assert model.normalize.mean.flatten().tolist() == pytest.approx(info.mean)
        assert model.normalize.std.flatten().tolist() == pytest.approx(info.std)
    with pytest.raises(RobustlabError, match="unknown dataset 'imagenet-22k'"):
        create_model("cifar_cnn", dataset="imagenet-22k")
    # explicit arguments override the dataset's
    m = create_model("resnet18", dataset="cifar10", num_classes=7, width=8)
    assert m.linear.out_features == 7


def test_seeded_creation_is_reproducible_and_leaves_global_rng() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = create_model("cifar_cnn", seed=5)
    assert torch.equal(torch.rand(1), expected_next)  # global RNG untouched
    b = create_model("cifar_cnn", seed=5)
    c = create_model("cifar_cnn", seed=6)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    assert not torch.equal(a.features[0].weight, c.features[0].weight)
