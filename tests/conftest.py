"""Shared fixtures: the real data and models in ../shared (or $ROBUSTLAB_SHARED)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _shared_root() -> Path:
    env = os.environ.get("ROBUSTLAB_SHARED")
    return Path(env) if env else REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_root() -> Path:
    root = _shared_root()
    if not (root / "data").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"shared data not found at {root} (set ROBUSTLAB_SHARED)")
        pytest.skip(f"shared data not found at {root}")
    return root


@pytest.fixture(scope="session")
def shared_data(shared_root: Path) -> Path:
    """The folder holding cifar-10-batches-bin/, mnist/ and fashion-mnist/."""
    return shared_root / "data"


@pytest.fixture(scope="session")
def trades_checkpoint(shared_root: Path) -> Path:
    """The TRADES authors' MNIST SmallCNN state dict."""
    return shared_root / "models" / "trades_mnist_smallcnn.pt"


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)
