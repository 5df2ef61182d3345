"""Explicit input normalization: a model trained on raw [0, 1] inputs (the TRADES authors'
SmallCNN, and a robustlab run trained with ``input_norm: none``), saved and loaded with each
``input_norm`` option; the warning for third-party weights in a normalizing model."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from robustlab.config import load_config
from robustlab.errors import ConfigError
from robustlab.models import create_model, input_normalization, load_checkpoint, parse_input_norm
from robustlab.models.checkpoint import NormalizationWarning

MNIST = ([0.1307], [0.3081])


@pytest.fixture(scope="module")
def mnist_test(shared_data: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from robustlab.data import load_split

    split = load_split("mnist", "test", root=shared_data)
    return split.images[:300].float() / 255.0, split.labels[:300]


def load(name: str, path: Path, option: str) -> tuple[torch.nn.Module, list[str]]:
    model = create_model(name, dataset="mnist", input_norm=option)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_checkpoint(model, path)
    msgs = [str(w.message) for w in caught if issubclass(w.category, NormalizationWarning)]
    return model.eval(), msgs


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_raw_input_checkpoint_with_each_option(
    trades_checkpoint: Path, mnist_test: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = mnist_test
    results = {}
    for option in ("auto", "none", "dataset", "0.1307,0.3081"):
        model, msgs = load("smallcnn", trades_checkpoint, option)
        info = input_normalization(model)
        results[option] = (accuracy(model, x, y), info, msgs)
    # auto for smallcnn is raw inputs (registered so); none too: the published ~99% clean
    for option in ("auto", "none"):
        acc, info, msgs = results[option]
        assert not info["applied"] and acc >= 0.97 and msgs == []
    # dataset and the explicit MNIST constants normalize the same way, warn, and lose accuracy
    for option in ("dataset", "0.1307,0.3081"):
        acc, info, msgs = results[option]
        assert info["applied"] and info["mean"] == MNIST[0] and info["std"] == MNIST[1]
        assert acc < results["none"][0]
        assert (
            len(msgs) == 1 and "--input-norm none" in msgs[0] and "not a robustlab run" in msgs[0]
        )


def test_robustlab_run_trained_without_normalization(
    tmp_path: Path, mnist_test: tuple[torch.Tensor, torch.Tensor]
) -> None:
    from robustlab.train import load_run_model, train

    over = ["model.input_norm=none", "data.dataset=mnist-mini", "data.n_train=256"]
    over += ["train.epochs=1", "train.progress=false", "train.log_every=0", "validation.every=0"]
    cfg = load_config(None, over)
    run = train(cfg, tmp_path / "run")
    model, stored = load_run_model(run)
    assert stored.model.input_norm == "none" and not input_normalization(model)["applied"]
    x, y = mnist_test
    best = run / "checkpoints" / "best.pt"
    raw, msgs = load("lenet5", best, "none")
    assert msgs == []  # a robustlab run's own checkpoint: no warning
    with torch.no_grad():
        torch.testing.assert_close(raw(x), model(x))
    normed, msgs = load("lenet5", best, "auto")  # lenet5's default normalizes (MNIST)
    assert msgs == [] and input_normalization(normed)["applied"]
    with torch.no_grad():
        assert not torch.allclose(normed(x), model(x))
    explicit, _ = load("lenet5", best, "0,1")  # mean 0, std 1: the identity
    with torch.no_grad():
        torch.testing.assert_close(explicit(x), model(x))


def test_bad_input_norm_values() -> None:
    assert parse_input_norm("0.5,0.25", 3) == ("values", ([0.5] * 3, [0.25] * 3))
    assert parse_input_norm("1,2,3,4,5,6", 3) == ("values", ([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]))
    for bad in ("0.5", "a,b", "1,2,3", "batch"):
        with pytest.raises(ConfigError, match="input_norm"):
            parse_input_norm(bad, 3)
    with pytest.raises(ConfigError, match="std must be positive"):
        create_model("lenet5", input_norm="0,0")
    with pytest.raises(ConfigError, match="needs a dataset"):
        create_model("lenet5", input_norm="dataset")
    with pytest.raises(ConfigError, match="model.input_norm"):
        load_config(None, ["model.input_norm=zscore"])
