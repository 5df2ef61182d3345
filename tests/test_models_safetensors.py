"""safetensors weights files: round trip with identical logits, the same prefix stripping,
remapping and error messages as torch files, one-line errors for corrupt files, and the
weights a training run exports."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from robustlab.cli import main
from robustlab.config import load_config
from robustlab.errors import CheckpointError, ConfigError
from robustlab.models import create_model, load_checkpoint, read_weights, save_weights
from robustlab.train import build_model, load_run_model, train


def _x(n: int = 8) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def test_round_trip_gives_identical_logits(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = create_model("lenet5").eval()
    path = save_weights(model, tmp_path / "w.safetensors", {"epoch": 4})
    other = create_model("lenet5").eval()  # another random init
    x = _x()
    assert not torch.equal(model(x), other(x))
    report = load_checkpoint(other, path)
    assert report.num_tensors == len(model.state_dict())
    with torch.no_grad():
        assert torch.equal(model(x), other(x))  # bit-identical: the same float32 tensors
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        assert f.metadata()["epoch"] == "4"


def test_third_party_checkpoint_converts_and_loads_alike(
    trades_checkpoint: Path, tmp_path: Path
) -> None:
    sd = torch.load(trades_checkpoint, map_location="cpu", weights_only=True)
    ref = create_model("smallcnn").eval()
    load_checkpoint(ref, trades_checkpoint)
    # a DataParallel-wrapped state dict with other key names, stored as safetensors
    renamed = {"module." + k.replace("classifier", "head"): v for k, v in sd.items()}
    path = save_weights(renamed, tmp_path / "renamed.safetensors")
    model = create_model("smallcnn").eval()
    with pytest.raises(CheckpointError, match=r"names differ.*remap='auto'"):
        load_checkpoint(model, path)
    report = load_checkpoint(model, path, remap="auto")
    assert report.stripped == ["module."]
    assert report.remapped["head.fc1.weight"] == "classifier.fc1.weight"
    x = _x()
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))
    with pytest.raises(CheckpointError, match="another architecture"):
        load_checkpoint(create_model("lenet5"), path)
    with pytest.raises(CheckpointError, match="entry .*'ema'.* torch checkpoints"):
        load_checkpoint(model, path, key="ema")


def test_corrupt_and_wrong_files_are_one_line_errors(tmp_path: Path) -> None:
    model = create_model("lenet5")
    good = save_weights(model, tmp_path / "good.safetensors")
    data = good.read_bytes()
    cases = {
        "truncated.safetensors": data[: len(data) // 2],
        "garbage.safetensors": b"definitely not a safetensors file",
        "empty.safetensors": b"",
    }
    for name, raw in cases.items():
        (tmp_path / name).write_bytes(raw)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(model, tmp_path / name)
        msg = str(info.value)
        assert "not a readable safetensors file" in msg and name in msg
        assert "\n" not in msg
    with pytest.raises(CheckpointError, match="not found"):
        read_weights(tmp_path / "absent.safetensors")
    with pytest.raises(ConfigError, match="must end in .safetensors"):
        save_weights(model, tmp_path / "w.pt")


def test_eval_cli_reads_safetensors_and_corrupt_is_one_line(
    trades_checkpoint: Path, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    sd = torch.load(trades_checkpoint, map_location="cpu", weights_only=True)
    path = save_weights(sd, tmp_path / "trades.safetensors")
    base = ["eval", "--model", "smallcnn", "--dataset", "mnist", "--data-dir", str(shared_data)]
    assert main([*base, "--weights", str(path), "--n", "200", "--json", "--quiet"]) == 0
    import json

    assert json.loads(capsys.readouterr().out)["clean_accuracy"] >= 0.98  # 99.48% on all 10k
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[:1000])
    assert main([*base, "--weights", str(bad), "--n", "10"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("robustlab: error: ")
    assert "not a readable safetensors file" in err[0]


def test_training_exports_best_and_ema_weights(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        [
            "data.dataset=mnist-mini",
            "data.n_train=100",
            "data.batch_size=50",
            "train.epochs=1",
            "train.progress=false",
            "train.ema_decay=0.9",
            "validation.every=0",
        ],
    )
    run = train(cfg, tmp_path / "run")
    ck = run / "checkpoints"
    x = _x(4)
    for which, name in (("best", "best"), ("ema", "ema")):
        ref, _ = load_run_model(run, which)
        model = build_model(cfg).eval()  # the same architecture and input normalization
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a run's own weights: no normalization warning
            report = load_checkpoint(model, ck / f"{name}.safetensors")
        assert report.robustlab_run
        with torch.no_grad():
            assert torch.equal(model(x), ref(x)), which
