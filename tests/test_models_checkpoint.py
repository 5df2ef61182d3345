"""Checkpoint loading: the TRADES model's published accuracy, wrappers, prefixes, remapping,
and clear errors for checkpoints of another architecture."""

from __future__ import annotations

import gzip
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from robustlab.errors import CheckpointError, ConfigError
from robustlab.evaluate import clean_accuracy, predict
from robustlab.io import atomic_torch_save
from robustlab.models import create_model, load_checkpoint


def _read_idx(path: Path) -> torch.Tensor:
    """Tiny private IDX reader (the tests must not depend on robustlab.data being correct)."""
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    dims = np.frombuffer(raw[4 : 4 + 4 * ndim], dtype=">u4").astype(int)
    return torch.from_numpy(np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims).copy())


@pytest.fixture(scope="module")
def mnist_test(shared_data: Path) -> tuple[torch.Tensor, torch.Tensor]:
    x = _read_idx(shared_data / "mnist" / "t10k-images-idx3-ubyte.gz")[:, None]
    y = _read_idx(shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz").long()
    return x, y


@pytest.fixture(scope="module")
def trades_sd(trades_checkpoint: Path) -> OrderedDict:
    return torch.load(trades_checkpoint, map_location="cpu", weights_only=True)


def test_trades_checkpoint_exact_published_accuracy(
    trades_checkpoint: Path, mnist_test: tuple[torch.Tensor, torch.Tensor]
) -> None:
    model = create_model("smallcnn", dataset="mnist")
    report = load_checkpoint(model, trades_checkpoint)
    assert report.num_tensors == 14 and not report.remapped and report.entry == ""
    x, y = mnist_test
    assert x.shape == (10000, 1, 28, 28)
    pred = predict(model, x, batch_size=1000)
    assert int((pred == y).sum()) == 9948  # 99.48%, as published by the TRADES authors
    # float inputs and a ragged last batch give the same answer
    acc = clean_accuracy(model, x[:1000].float() / 255, y[:1000], batch_size=333)
    assert acc == float((pred[:1000] == y[:1000]).double().mean())


def _logits(model: torch.nn.Module) -> torch.Tensor:
    torch.manual_seed(1)
    with torch.no_grad():
        return model.eval()(torch.rand(4, 1, 28, 28))


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"module." + k: v for k, v in sd.items()},
        lambda sd: {"_orig_mod.module." + k: v for k, v in sd.items()},
        lambda sd: {"state_dict": sd, "epoch": 40},
        lambda sd: {"model_state_dict": sd},
        lambda sd: {"net": {"module." + k: v for k, v in sd.items()}, "acc": 0.99},
        # robustlab's own training checkpoints: model + optimizer + scheduler + step ...
        lambda sd: {"model": sd, "optimizer": {"state": {}, "param_groups": []}, "step": 7},
    ],
    ids=["module", "compile+module", "state_dict", "model_state_dict", "net", "train"],
)
def test_wrapped_checkpoints_load(tmp_path: Path, trades_sd: OrderedDict, wrap) -> None:
    reference = create_model("smallcnn")
    reference.load_state_dict(trades_sd)
    path = tmp_path / "ckpt.pt"
    atomic_torch_save(wrap(trades_sd), path)
    model = create_model("smallcnn")
    report = load_checkpoint(model, path)
    assert report.num_tensors == len(trades_sd)
    torch.testing.assert_close(_logits(model), _logits(reference), rtol=0, atol=0)


def test_renamed_keys_fail_then_remap_auto(tmp_path: Path, trades_sd: OrderedDict) -> None:
    renamed = OrderedDict(
        (k.replace("feature_extractor", "features").replace("classifier", "head"), v)
        for k, v in trades_sd.items()
    )
    path = tmp_path / "renamed.pt"
    atomic_torch_save(renamed, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(create_model("smallcnn"), path)
    msg = str(err.value)
    assert "14 missing keys" in msg and "feature_extractor.conv1.weight" in msg
    assert "14 unexpected keys" in msg and "features.conv1.weight" in msg
    assert "+9 more" in msg  # lists a few, counts the rest
    assert "remap" in msg
    model = create_model("smallcnn")
    report = load_checkpoint(model, path, remap="auto")
    assert report.remapped["features.conv1.weight"] == "feature_extractor.conv1.weight"
    assert report.remapped["head.fc3.bias"] == "classifier.fc3.bias"
    assert len(report.remapped) == 14
    reference = create_model("smallcnn")
    reference.load_state_dict(trades_sd)
    torch.testing.assert_close(_logits(model), _logits(reference), rtol=0, atol=0)


def test_other_architecture_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "lenet.pt"
    atomic_torch_save(create_model("lenet5").state_dict(), path)
    for remap in ("none", "auto"):
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(create_model("smallcnn"), path, remap=remap)
        msg = str(err.value)
        assert "another architecture" in msg
        assert "missing keys" in msg and "unexpected keys" in msg and "conv1.weight" in msg
        if remap == "auto":
            assert "remap='auto' refused" in msg


def test_shape_mismatch_lists_shapes(tmp_path: Path) -> None:
    path = tmp_path / "cifar_smallcnn.pt"
    atomic_torch_save(create_model("smallcnn", dataset="cifar10").state_dict(), path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(create_model("smallcnn", dataset="mnist"), path, remap="auto")
    msg = str(err.value)
    assert "2 shape mismatches" in msg
    assert "feature_extractor.conv1.weight [32, 3, 3, 3] vs model [32, 1, 3, 3]" in msg
    assert "classifier.fc1.weight [200, 1600] vs model [200, 1024]" in msg
    # strict=False loads what fits and reports the rest
    model = create_model("smallcnn", dataset="mnist")
    report = load_checkpoint(model, path, strict=False)
    assert [k for k, _, _ in report.mismatched] == [
        "feature_extractor.conv1.weight",
        "classifier.fc1.weight",
    ]
    assert report.num_tensors == 12


def test_bad_files(tmp_path: Path) -> None:
    model = create_model("smallcnn")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(model, tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(model, junk)
    nosd = tmp_path / "nosd.pt"
    atomic_torch_save({"optimizer": {"lr": 0.1}, "epoch": 3}, nosd)
    with pytest.raises(CheckpointError, match="no model state dict.*optimizer"):
        load_checkpoint(model, nosd)
    with pytest.raises(ConfigError, match="remap"):
        load_checkpoint(model, nosd, remap="guess")


def test_code_in_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "module.pt"
    torch.save(create_model("lenet5"), path)  # a pickled module, not a state dict
    with pytest.raises(
        CheckpointError, match="pickles the object robustlab.models.small.LeNet5.*weights_only=True"
    ):
        load_checkpoint(create_model("lenet5"), path)


def test_explicit_entry_and_missing_counters(tmp_path: Path) -> None:
    torch.manual_seed(3)
    ema = create_model("cifar_cnn").state_dict()
    sd = {k: v for k, v in ema.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "last.pt"
    atomic_torch_save({"model": create_model("cifar_cnn").state_dict(), "ema": sd}, path)
    model = create_model("cifar_cnn")
    report = load_checkpoint(model, path, key="ema")
    assert report.entry == "ema"
    for k, v in sd.items():
        torch.testing.assert_close(model.state_dict()[k], v)
    with pytest.raises(CheckpointError, match="no entry 'swa'"):
        load_checkpoint(model, path, key="swa")


def test_gn_bn_confusion_gets_a_hint(tmp_path: Path) -> None:
    gn, bn = tmp_path / "gn.pt", tmp_path / "bn.pt"
    atomic_torch_save(create_model("cifar_cnn", norm="gn").state_dict(), gn)
    atomic_torch_save(create_model("cifar_cnn", norm="bn").state_dict(), bn)
    with pytest.raises(CheckpointError, match="missing keys.*running_mean.*norm='gn'"):
        load_checkpoint(create_model("cifar_cnn", norm="bn"), gn)
    with pytest.raises(CheckpointError, match="unexpected keys.*running_var.*norm='bn'"):
        load_checkpoint(create_model("cifar_cnn", norm="gn"), bn)


def test_trades_wrn_sub_block1_hint(tmp_path: Path) -> None:
    path = tmp_path / "wrn.pt"
    atomic_torch_save(
        create_model("wideresnet", depth=10, widen_factor=1, sub_block1=True).state_dict(), path
    )
    with pytest.raises(CheckpointError, match="sub_block1=True"):
        load_checkpoint(create_model("wideresnet", depth=10, widen_factor=1), path)
    model = create_model("wideresnet", depth=10, widen_factor=1, sub_block1=True)
    assert load_checkpoint(model, path).num_tensors == len(model.state_dict())
