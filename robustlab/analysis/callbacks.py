"""The ``analysis`` training callback: records analyses per epoch at a configurable cost.

Registered with :mod:`robustlab.train.callbacks` (loaded as a plugin by name). In a recipe::

    callbacks:
      - name: analysis
        every: 2                       # epochs between records (the last epoch always records)
        kwargs: {what: logits,fisher, n: 256}

Each record adds ``analysis/<statistic>`` numbers (means over ``n`` seeded test samples, the
same samples every epoch) to the epoch line of ``metrics.jsonl``; with ``save_arrays`` the
per-sample arrays go to ``RUN/analysis/epochs/<analysis>_e<epoch>.npz``. Everything runs on
the delivered model (the EMA weights when EMA is on) in eval mode; ``dynamics`` takes the
parameter velocity of the run's own objective on a seeded training batch.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from robustlab.analysis.run import compute_analyses, default_eps, parse_analyses, select_samples
from robustlab.errors import ConfigError, RobustlabError
from robustlab.io import atomic_write_bytes
from robustlab.train.callbacks import EpochContext, register_callback

__all__ = ["AnalysisCallback", "flatten_summary"]

# The numbers logged per analysis: (summary key, metrics name).
_LOGGED = {
    "logits": [
        ("max_logit", "max_logit"),
        ("gap", "gap"),
        ("gap_to_mean", "gap_to_mean"),
        ("confidence", "confidence"),
        ("entropy", "entropy"),
        ("correct", "clean_acc"),
    ],
    "margins": [("margin_mean", "margin"), ("frac_margin_below_eps", "frac_margin_below_eps")],
    "jacobian": [("fro_mean", "jacobian_fro"), ("spec_mean", "jacobian_spec")],
    "fisher": [
        ("fisher_fro_mean", "fisher_fro"),
        ("fisher_top_eig_mean", "fisher_top_eig"),
        ("fisher_trace_mean", "fisher_trace"),
        ("kl_metric", "kl_metric"),
        ("kl_metric_over_fisher_fro", "kl_metric_over_fisher_fro"),
    ],
}


def flatten_summary(summaries: dict[str, Any], prefix: str = "analysis/") -> dict[str, float]:
    """The headline numbers of :func:`compute_analyses` summaries as ``analysis/<name>``."""
    out: dict[str, float] = {}
    for name, pairs in _LOGGED.items():
        s = summaries.get(name)
        if not isinstance(s, dict):
            continue
        for key, label in pairs:
            v = s.get(key)
            if isinstance(v, dict):
                v = v.get("mean")
            if isinstance(v, (int, float)):
                out[prefix + label] = float(v)
    dyn = summaries.get("dynamics")
    if isinstance(dyn, dict):
        for label, d in dyn.get("objectives", {}).items():
            suffix = "" if len(dyn["objectives"]) == 1 else f"/{label}"
            for key in ("frac_negative_speed", "frac_negative_below_eps"):
                if isinstance(d.get(key), (int, float)):
                    out[f"{prefix}{key}{suffix}"] = float(d[key])
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

    def on_epoch_end(self, ctx: EpochContext) -> None:
        data = ctx.data
        split = getattr(data, self.split, None) or data.test
        idx = select_samples(len(split), self.n, self.seed)
        x = (split.images[idx].float() / 255.0).to(ctx.device)
        y = split.labels[idx].to(ctx.device)
        eps = self.eps if self.eps is not None else default_eps(ctx.config.data.dataset, self.norm)
        objective, batch = None, None
        if "dynamics" in self.what:
            from robustlab.objectives import create_objective

            objective = create_objective(ctx.config.objective.name, **ctx.config.objective.params)
            tidx = select_samples(len(data.train), min(256, len(data.train)), self.seed + 1)
            batch = (
                (data.train.images[tidx].float() / 255.0).to(ctx.device),
                data.train.labels[tidx].to(ctx.device),
            )
        summaries, arrays = compute_analyses(
            ctx.model, x, y, self.what, norm=self.norm, eps=eps, seed=self.seed,
            objective=objective, train_batch=batch, margin_steps=self.margin_steps,
        )  # fmt: skip
        ctx.log(flatten_summary(summaries))
        if self.save_arrays:
            for name, arr in arrays.items():
                buf = io.BytesIO()
                np.savez_compressed(buf, **arr)
                path = ctx.run_dir / "analysis" / "epochs" / f"{name}_e{ctx.epoch:04d}.npz"
                atomic_write_bytes(path, buf.getvalue())
