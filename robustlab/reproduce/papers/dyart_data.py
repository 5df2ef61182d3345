"""The measurements the `dyart` paper's claims and figures use, per seed, cached in the run root
(``ROOT/analysis/dyart-s<seed>-<settings hash>.npz``): margins and closed-form speeds of the
PGD-AT and DyART updates at the burn-in and partly robust checkpoints (live weights), the D4
check (closed form vs one SGD step), and test-image margins of the final models."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from robustlab.errors import RobustlabError
from robustlab.io import atomic_write_bytes

__all__ = ["seed_data", "training_batches"]


def training_batches(
    dataset: str, n_batches: int, batch: int, seed: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n_batches`` seeded batches of training images (float in [0, 1]) and labels."""
    from robustlab.data import load_split

    train = load_split(dataset, "train")
    g = torch.Generator().manual_seed(10_000 + int(seed))
    idx = torch.randperm(len(train), generator=g)[: n_batches * batch]
    return [
        (train.images[i].float().div(255.0), train.labels[i].long())
        for i in idx.reshape(n_batches, batch)
    ]


def _objectives(paper: Any, ctx: Any) -> dict[str, Any]:
    from robustlab.objectives import create_objective

    return {
        "pgd_at": create_objective("pgd_at", **paper.objective_params(ctx, "pgd_at")),
        "dyart": create_objective("dyart", **paper.objective_params(ctx, "dyart")),
    }


def _d4(paper: Any, ctx: Any, model: torch.nn.Module, s: int, batch: Any) -> dict[str, Any]:
    from robustlab.analysis.batch_dynamics import speed_check
    from robustlab.analysis.dynamics import _make_state
    from robustlab.reproduce.papers.metric_data import claims_images

    d, b = paper.settings(ctx), paper.budget(ctx)
    obj = _objectives(paper, ctx)["pgd_at"]
    xb, yb = batch[0].double(), batch[1]
    index = torch.arange(len(yb))

    def loss_fn(m: torch.nn.Module) -> torch.Tensor:
        # A fresh generator per call: the velocity and the real step see the same x_adv.
        return obj(m, xb, yb, index, _make_state(m, xb.device, s))[0]

    x, y = claims_images(b.dataset, d.d4_n)
    try:
        return speed_check(
            model, loss_fn, x, y, lr=d.d4_lr, margin_steps=2 * d.margin_steps, seed=s
        )
    except RobustlabError:  # no usable point (a very weak burn-in): D4 gets NaN, so it fails
        nan = np.full(len(y), np.nan)
        return {"closed": nan, "closed_box": nan, "finite_difference": nan, "margin": nan}


def _compute(paper: Any, ctx: Any, s: int) -> dict[str, np.ndarray]:
    from robustlab.analysis.batch_dynamics import batch_dynamics
    from robustlab.analysis.margins import minimum_margins
    from robustlab.reproduce.papers.dyart import CHECKPOINTS, key
    from robustlab.reproduce.papers.metric_data import claims_images
    from robustlab.train import load_run_model

    d, b = paper.settings(ctx), paper.budget(ctx)
    batches = training_batches(b.dataset, d.n_batches, d.batch, s)
    objs = _objectives(paper, ctx)
    out: dict[str, np.ndarray] = {}
    for ck, _ in CHECKPOINTS:
        model, _ = load_run_model(ctx.run_dir(key(ck, s)), which="last")  # live weights
        res = batch_dynamics(model, objs, batches, b.eps, velocity=d.velocity,
                             margin_steps=d.margin_steps, seed=s)  # fmt: skip
        out[f"{ck}/margin"] = res["margin"]
        for label, r in res["objectives"].items():
            out[f"{ck}/speed/{label}"] = r["speed"]
            if "kept" in r:
                out[f"{ck}/kept/{label}"] = r["kept"]
        if ck == "burnin":
            chk = _d4(paper, ctx, model, s, batches[0])
            for k in ("closed", "closed_box", "finite_difference", "margin"):
                out[f"d4/{k}"] = chk[k]
    x, y = claims_images(b.dataset, d.n_margin)
    for kind in ("burnin", "at", "dyart"):
        model, _ = load_run_model(ctx.run_dir(key(kind, s)), which="last")
        m = minimum_margins(model, x, y, steps=d.margin_steps, seed=s, eps_hint=b.eps)
        out[f"final/{kind}"] = torch.where(m["correct"], m["margin"], 0.0).numpy()
    return out


def seed_data(paper: Any, ctx: Any, s: int) -> dict[str, np.ndarray]:
    """The measurements of seed ``s`` (computed once, then read from the cache)."""
    d = paper.settings(ctx)
    tag = hashlib.sha1(json.dumps(asdict(d), sort_keys=True).encode()).hexdigest()[:8]
    cache = ctx.root / "analysis" / f"dyart-s{s}-{tag}.npz"
    if cache.is_file():
        with np.load(cache) as f:
            return {k: f[k] for k in f.files}
    out = _compute(paper, ctx, s)
    buf = io.BytesIO()
    np.savez_compressed(buf, **out)
    atomic_write_bytes(cache, buf.getvalue())
    return out
