"""Training checkpoints: RNG states, atomic save/load of ``last.pt``/``best.pt``, run models.

The delivered weights are also exported as ``best.safetensors`` (and the EMA weights of the
last step as ``ema.safetensors``): tensors only, loadable by ``robustlab.models.load_checkpoint``
and ``robustlab eval --weights`` without unpickling anything.

Everything stored is loadable with ``weights_only=True`` (tensors, dicts, lists, numbers,
strings), so :func:`robustlab.io.safe_torch_load` reads it back; the Python and NumPy RNG
states are converted to tensors and lists for that.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from robustlab.config import Config, config_from_dict
from robustlab.errors import CheckpointError, RobustlabError
from robustlab.io import atomic_torch_save, safe_torch_load
from robustlab.train.rundir import CHECKPOINTS, RunDir

__all__ = [
    "rng_state",
    "set_rng_state",
    "save_checkpoint",
    "load_checkpoint",
    "damaged_checkpoint_advice",
    "read_run_config",
    "build_model",
    "load_run_model",
    "export_weights",
    "load_initial_weights",
    "CHECKPOINT_DIR",
]

CHECKPOINT_DIR = CHECKPOINTS


def rng_state() -> dict[str, Any]:
    """The global RNG states of torch (CPU and CUDA), NumPy and Python, as plain data."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": int(version), "internal": list(internal), "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write a checkpoint atomically (a crash leaves the previous file intact)."""
    atomic_torch_save(payload, path)


def export_weights(run_dir: str | Path, name: str, model: nn.Module, **metadata: Any) -> Path:
    """Write ``RUN/checkpoints/<name>.safetensors``: the model's weights alone (no optimizer
    state, no code); ``metadata`` (e.g. epoch, step) is stored as strings in the header."""
    from robustlab.models.checkpoint import RUN_WEIGHTS_KEY, save_weights

    path = RunDir(run_dir).weights(name)
    meta = {k: str(v) for k, v in metadata.items()}
    return save_weights(model, path, {**meta, RUN_WEIGHTS_KEY: "1"})


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``); a damaged
    file is a one-line :class:`CheckpointError` saying what to do about it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return safe_torch_load(path, advice=damaged_checkpoint_advice(path))


def damaged_checkpoint_advice(path: Path) -> str:
    """What to do about a damaged ``last.pt`` or ``best.pt`` of a run."""
    other = "best" if path.stem == "last" else "last"
    alt = path.with_name(f"{other}.pt")
    if path.stem == "last":
        return (
            "the run cannot resume from it: delete it and train again in a new --run-dir "
            f"(the weights of {alt} stay usable with robustlab eval --run RUN --which best)"
            if alt.is_file()
            else "delete it and train again in a new --run-dir"
        )
    if alt.is_file():
        return f"delete it, or evaluate the last checkpoint instead (--which last reads {alt})"
    return "delete it and train again"


def read_run_config(run_dir: str | Path) -> Config:
    """The resolved configuration stored in ``RUN/config.yaml``."""
    path = RunDir(run_dir).config
    if not path.is_file():
        raise RobustlabError(f"{run_dir} is not a run directory (no config.yaml)")
    return config_from_dict(yaml.safe_load(path.read_text(encoding="utf-8")))


def build_model(cfg: Config) -> nn.Module:
    """The (untrained) model of a configuration."""
    from robustlab.models import create_model

    kw: dict[str, Any] = dict(cfg.model.kwargs)
    if cfg.model.norm is not None:
        kw["norm"] = cfg.model.norm
    if cfg.model.act is not None:
        kw["act"] = cfg.model.act
    if cfg.model.bn_momentum is not None:
        kw["bn_momentum"] = cfg.model.bn_momentum
    kw["input_norm"] = cfg.model.input_norm
    return create_model(cfg.model.name, dataset=cfg.data.dataset, **kw)


def load_run_model(
    run_dir: str | Path, which: str = "best", map_location: Any = "cpu"
) -> tuple[nn.Module, Config]:
    """Rebuild a run's model with trained weights, in eval mode.

    ``which``: ``best`` (the delivered model at the best validation epoch; the final one when
    the run had no validation), ``last`` (the raw weights of the last checkpoint) or ``ema``
    (the EMA weights of the last checkpoint).
    """
    if which not in ("best", "last", "ema"):
        raise RobustlabError(f"which={which!r}: choose one of best, last, ema")
    run = RunDir(run_dir)
    cfg = read_run_config(run.root)
    model = build_model(cfg)
    if which == "best":
        state = load_checkpoint(run.checkpoint("best"))["model"]
    else:
        ck = load_checkpoint(run.checkpoint("last"))
        if which == "ema":
            if ck.get("ema") is None:
                raise RobustlabError(f"run {run} was trained without EMA (train.ema_decay=0)")
            state = ck["ema"]["model"]
        else:
            state = ck["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint of {run} does not fit its model: {e}") from None
    return model.to(map_location).eval(), cfg


def load_initial_weights(model: nn.Module, source: str | Path, remap: str = "none") -> None:
    """``model.weights``: a checkpoint file, or a run directory (its best model)."""
    from robustlab.errors import ConfigError
    from robustlab.models import load_checkpoint as load_weights

    path = Path(source)
    if path.is_dir():
        path = RunDir(path).checkpoint("best")
        if not path.is_file():
            raise ConfigError(f"model.weights: {source} is not a complete run (no best.pt)")
        state = load_checkpoint(path)["model"]
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise ConfigError(f"model.weights: {source} does not fit model: {e}") from None
        return
    if not path.is_file():
        raise ConfigError(f"model.weights: checkpoint not found: {source}")
    load_weights(model, path, remap=remap)
