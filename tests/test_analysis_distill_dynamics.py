"""Boundary dynamics on a ``distill`` run use that run's teacher targets: the speeds the
per-epoch analysis callback records equal speeds computed by hand from the distillation loss
with the teacher's logits of the same training samples (and differ from those of other
samples, the mistake a rebuilt objective with batch positions as indices would make)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from robustlab.analysis.dynamics import boundary_speed, parameter_velocity
from robustlab.analysis.margins import minimum_margins
from robustlab.analysis.run import select_samples
from robustlab.attacks.threat import make_threat
from robustlab.data import load_data
from robustlab.data.convert import to_float
from robustlab.models import create_model
from robustlab.objectives.distill import distill_loss
from robustlab.train import load_run_model

N_TRAIN, N_TEST, STEPS, EPS, TAU, ALPHA = 512, 24, 20, 0.3, 1.0, 1.0


def _speeds_by_hand(model, teacher, data, tidx_teacher) -> np.ndarray:  # noqa: ANN001
    test = data.test
    idx = select_samples(len(test), N_TEST, 0)  # the callback's samples (n, seed 0)
    x, y = to_float(test.images[idx]), test.labels[idx]
    m = minimum_margins(model, x, y, norm="linf", steps=STEPS, seed=0, eps_hint=EPS)
    ok = (m["verified"] & m["correct"]).nonzero().squeeze(1)
    tidx = select_samples(len(data.train), min(256, len(data.train)), 1)  # the callback's batch
    xt, yt = to_float(data.train.images[tidx]), data.train.labels[tidx]
    with torch.no_grad():
        zt = teacher(to_float(data.train.images[tidx_teacher(tidx)]))

    def loss(mm: torch.nn.Module) -> torch.Tensor:
        return distill_loss(mm(xt), zt, yt, TAU, ALPHA, "convex")[0]

    velocity = parameter_velocity(model, loss)
    speed = np.full(N_TEST, np.nan)
    res = boundary_speed(model, m["x_hat"][ok], y[ok], velocity, make_threat("linf", EPS), x=x[ok])
    speed[ok.numpy()] = res["speed"].double().numpy()
    return speed


def test_distill_dynamics_use_the_runs_teacher_targets(
    tmp_path: Path, trades_checkpoint: Path
) -> None:
    from robustlab.api import train
    from robustlab.config import load_config
    from robustlab.models import load_checkpoint

    teacher = create_model("smallcnn", dataset="mnist")
    load_checkpoint(teacher, trades_checkpoint)
    teacher.eval()
    cb = [{"name": "analysis", "every": 1, "kwargs": {
        "what": "dynamics", "n": N_TEST, "margin_steps": STEPS, "eps": EPS, "save_arrays": True,
    }}]  # fmt: skip
    cfg = load_config(None, [
        "data.dataset=mnist-mini", f"data.n_train={N_TRAIN}", "data.n_val=0",
        "data.batch_size=64", "validation.every=0", "train.epochs=1", "train.progress=false",
        "train.log_every=0", "train.device=cpu", "train.ema_decay=0", "optim.lr=0.1",
        # the reloaded model below has the default memory format; channels_last convolutions
        # round differently, which moves the solver's boundary points by ~1e-5
        "train.channels_last=false",
        "objective.name=distill", f"objective.teacher={trades_checkpoint}",
        "objective.teacher_model=smallcnn", f"objective.tau={TAU}", f"objective.alpha={ALPHA}",
        f"callbacks={json.dumps(cb)}",
    ])  # fmt: skip
    run = train(cfg, run_dir=tmp_path / "run")
    with np.load(run / "analysis" / "epochs" / "dynamics_e0000.npz") as z:
        logged = z["speed__distill"]
    model, _ = load_run_model(run, "last")  # the weights the callback analysed (no EMA)
    data = load_data("mnist-mini", None, N_TRAIN, 0, cfg.seed)
    right = _speeds_by_hand(model, teacher, data, lambda tidx: tidx)
    assert np.isfinite(right).sum() >= 3  # enough verified points to compare
    # Same maths in another order of operations (one JVP vs. the analysis's batched calls):
    # float32 rounding, far below the difference the wrong targets make (checked below).
    np.testing.assert_allclose(logged, right, rtol=1e-4, atol=1e-7, equal_nan=True)
    wrong = _speeds_by_hand(model, teacher, data, lambda tidx: torch.arange(len(tidx)))
    fin = np.isfinite(right)
    assert np.abs(wrong[fin] - right[fin]).max() > 100 * (1e-4 * np.abs(right[fin]).max())
