"""The ``analysis`` training callback: records analyses per epoch at a configurable cost.

Registered with :mod:`robustlab.train.callbacks` (loaded as a plugin by name). In a recipe::

    callbacks:
      - name: analysis
        every: 2                       # epochs between records (the last epoch always records)
        kwargs: {what: logits,fisher, n: 256}

Each record adds ``analysis/<statistic>`` numbers (means over ``n`` seeded test samples, the
same samples every epoch) to the epoch line of ``metrics.jsonl``; with ``save_arrays`` the
per-sample arrays go to ``RUN/analysis/epochs/<analysis>_e<epoch>.npz``. Everything runs on
the delivered model (the EMA weights when EMA is on) in eval mode, or with ``weights: live``
the trained weights themselves (``ema``: the EMA weights, an error without EMA); ``dynamics``
takes the parameter velocity of the run's live objective (as the training loop holds it, with
any per-sample cache) on a seeded training batch passed with its training-set indices. The
logged numbers are those each registered analysis declares (:meth:`Analysis.logged`).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from robustlab.analysis.base import registered_analyses
from robustlab.analysis.run import compute_analyses, default_eps, parse_analyses, select_samples
from robustlab.data.convert import to_float
from robustlab.errors import ConfigError, RobustlabError
from robustlab.io import atomic_write_bytes
from robustlab.train.callbacks import EpochContext, register_callback
from robustlab.train.rundir import RunDir

__all__ = ["AnalysisCallback", "flatten_summary"]


def flatten_summary(summaries: dict[str, Any], prefix: str = "analysis/") -> dict[str, float]:
    """The numbers each registered analysis logs (:meth:`Analysis.logged`) from
    :func:`compute_analyses` summaries, as ``analysis/<name>``."""
    out: dict[str, float] = {}
    for analysis in registered_analyses():
        s = summaries.get(analysis.name)
        if isinstance(s, dict):
            out.update({prefix + k: v for k, v in analysis.logged(s).items()})
    return out


@register_callback("analysis")
class AnalysisCallback:
    """Per-epoch analysis records (see the module docstring for the options)."""

    def __init__(
        self,
        what: str | list[str] = "logits,fisher",
        n: int = 256,
        seed: int = 0,
        norm: str = "linf",
        eps: float | str | None = None,
        split: str = "test",
        margin_steps: int = 50,
        save_arrays: bool = False,
        weights: str = "delivered",
    ) -> None:
        try:
            self.what = parse_analyses(what)
        except RobustlabError as e:
            raise ConfigError(f"callbacks: analysis: {e}") from None
        if not isinstance(n, int) or n < 2:
            raise ConfigError(f"callbacks: analysis: n must be an integer >= 2, got {n!r}")
        if split not in ("test", "val", "train"):
            raise ConfigError(
                f"callbacks: analysis: split must be test, val or train, not {split!r}"
            )
        from robustlab.attacks.threat import make_threat, parse_eps

        self.eps = None if eps is None else parse_eps(eps)
        make_threat(norm, self.eps or 1.0)  # unknown norms fail now, not after an epoch
        self.n, self.seed, self.norm, self.split = n, seed, norm, split
        self.margin_steps, self.save_arrays = margin_steps, save_arrays
        if weights not in ("delivered", "live", "ema"):
            raise ConfigError(
                f"callbacks: analysis: weights must be delivered, live or ema, not {weights!r}"
            )
        self.weights = weights

    def on_epoch_end(self, ctx: EpochContext) -> None:
        data = ctx.data
        split = getattr(data, self.split, None) or data.test
        idx = select_samples(len(split), self.n, self.seed)
        x, y = to_float(split.images[idx], ctx.device), split.labels[idx].to(ctx.device)
        eps = self.eps if self.eps is not None else default_eps(ctx.config.data.dataset, self.norm)
        objective, batch = None, None
        if "dynamics" in self.what:
            # The live objective (its per-sample caches, e.g. distillation's teacher targets,
            # are indexed by training-set index) on a seeded training batch with its indices.
            if ctx.objective is None:
                raise RobustlabError("the dynamics analysis needs the run's live objective")
            objective = {ctx.config.objective.name: ctx.objective}
            tidx = select_samples(len(data.train), min(256, len(data.train)), self.seed + 1)
            batch = (
                to_float(data.train.images[tidx], ctx.device),
                data.train.labels[tidx].to(ctx.device),
                tidx.to(ctx.device),
            )
        summaries, arrays = compute_analyses(
            ctx.model_for(self.weights), x, y, self.what, norm=self.norm, eps=eps,
            seed=self.seed, objective=objective, train_batch=batch,
            margin_steps=self.margin_steps,
        )  # fmt: skip
        ctx.log(flatten_summary(summaries))
        if self.save_arrays:
            run = RunDir(ctx.run_dir)
            for name, arr in arrays.items():
                buf = io.BytesIO()
                np.savez_compressed(buf, **arr)
                atomic_write_bytes(run.epoch_arrays(name, ctx.epoch), buf.getvalue())
