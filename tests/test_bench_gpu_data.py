"""bench/gpu_data.py: CIFAR-10 batches packed as WebP mosaics come back byte for byte, and a
damaged pack is refused by its MD5."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PIL.WebPImagePlugin")
_spec = importlib.util.spec_from_file_location(
    "gpu_data", Path(__file__).resolve().parents[1] / "bench" / "gpu_data.py"
)
assert _spec is not None and _spec.loader is not None
gpu_data = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_data)


def _batch(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    records = rng.integers(0, 256, (100 * 100, 3073), dtype=np.uint8)
    records[:, 0] %= 10  # labels
    return records.tobytes()


def test_packed_batches_come_back_byte_for_byte(tmp_path: Path) -> None:
    src, pack, dest = tmp_path / "src", tmp_path / "pack", tmp_path / "dest"
    src.mkdir()
    for i, name in enumerate(("data_batch_1.bin", "test_batch.bin")):
        (src / name).write_bytes(_batch(i))
    gpu_data.pack(src, pack, ["data_batch_1.bin", "test_batch.bin"], method=0)
    gpu_data.unpack(pack, dest)
    for name in ("data_batch_1.bin", "test_batch.bin"):
        assert (dest / name).read_bytes() == (src / name).read_bytes()
    labels = bytearray((pack / "test_batch.bin.labels").read_bytes())
    labels[7] = (labels[7] + 1) % 10  # one label changed
    (pack / "test_batch.bin.labels").write_bytes(bytes(labels))
    with pytest.raises(SystemExit, match="test_batch.bin: rebuilt bytes do not match MD5"):
        gpu_data.unpack(pack, tmp_path / "again")


def test_a_file_that_is_not_a_batch_is_refused(tmp_path: Path) -> None:
    (tmp_path / "short.bin").write_bytes(b"\0" * 3073 * 10)
    with pytest.raises(SystemExit, match="not 10000 records"):
        gpu_data.pack(tmp_path, tmp_path / "pack", ["short.bin"], method=0)
