"""The `metric` paper (Shi et al., arXiv 1906.02494): the cross-class KL metric, its non-robust
carrier (the input Fisher information) and the Fisher regularizer; claims C1-C3.

Per seed ``s``: standard training (``metric-std-s``), PGD-AT (``metric-at-s``) and the Fisher
regularizer (``metric-fisher-s``), each with the ``analysis`` callback (metric, Fisher norm,
top eigenvalue, accuracy on fixed test images every epoch) and the ``snapshot`` callback (the
weights of every epoch). The claims recompute per-image numbers on the first ``n_claims`` test
images from the snapshots (so a bootstrap can resample images); the robust accuracies come
from the shared evaluation protocol.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from robustlab.analysis.logits import spearman
from robustlab.reproduce.claims import Claim, comparison, mean_diff
from robustlab.reproduce.engine import EvalTarget, Results
from robustlab.reproduce.papers.common import BUDGETS, Budget, fmt_eps, run_spec, seed_stats
from robustlab.reproduce.papers.metric_data import claims_images, epoch_arrays, logged_epochs
from robustlab.reproduce.plan import Paper, PlanContext, RunSpec, register_paper
from robustlab.reproduce.protocol import Protocol, eps_label

__all__ = ["MetricPaper", "MetricScale", "METRIC_SCALES", "MODELS"]

MODELS = (
    ("std", "standard", "standard"),
    ("at", "pgd_at", "PGD-AT"),
    ("fisher", "fisher", "Fisher reg."),
)


@dataclass(frozen=True)
class MetricScale:
    """The `metric` paper's settings on top of a scale's shared budget: more epochs than the
    `logits` and `uncertainty` papers
    (the per-epoch curves need several records while accuracy still rises), the learning
    rate, the Fisher regularizer's weight ``c``, the callback's images and the claims' images.
    """

    epochs: int
    lr: float | None
    c: float
    n_callback: int
    n_claims: int
    n_test: int | None = None  # test images of the protocol (None: the shared budget's)
    aa_n: int | None = None  # AutoAttack images (None: the shared budget's)
    checks_n: int | None = None  # images of the gradient-masking checks (None: the budget's)
    extra: tuple[str, ...] = ()


# cpu: Fashion-MNIST, LeNet-5, eps 0.1 (the shared cpu budget). Settings fixed from a preliminary
# run on
# seed 100 (not a verdict seed) by the accuracy curve alone: at the recipes' lr 0.05, MNIST
# reached 89% at the first record and barely moved after; Fashion-MNIST at lr 0.02 rises
# 66% -> 86% over 8 epochs, so the rise of the metric with accuracy is observable per epoch.
# 5 epochs on 2,000 images, and the protocol on 200 test images (AutoAttack 20, checks 16):
# cut to the shared machine (load 20-28 on 2 cores, about 7% of a core per process).
METRIC_SCALES = {
    "cpu": MetricScale(
        epochs=5,
        lr=0.02,
        c=1.0,
        n_callback=200,
        n_claims=200,
        n_test=200,
        aa_n=20,
        checks_n=16,
        extra=("data.n_train=2000",),
    ),
    "gpu": MetricScale(epochs=15, lr=None, c=1.0, n_callback=512, n_claims=1000),
    "paper": MetricScale(epochs=0, lr=None, c=1.0, n_callback=1000, n_claims=2000),
    "tiny": MetricScale(epochs=2, lr=None, c=1.0, n_callback=16, n_claims=40),
}


def _key(kind: str, s: int) -> str:
    return f"metric-{kind}-s{s}"


@register_paper("metric")
class MetricPaper(Paper):
    title = "C. Robust and non-robust components of a performance metric (Shi et al. 2019)"
    claim_ids = ("C1", "C2", "C3")

    def budget(self, ctx: PlanContext) -> Budget:
        return BUDGETS[ctx.scale]

    def settings(self, ctx: PlanContext) -> MetricScale:
        return METRIC_SCALES[ctx.scale]

    def runs(self, ctx: PlanContext) -> list[RunSpec]:
        b, m = self.budget(ctx), self.settings(ctx)
        cbs = [
            {"name": "analysis", "every": 1,
             "kwargs": {"what": "logits,fisher", "n": m.n_callback, "eps": b.eps}},
            {"name": "snapshot", "every": 1},
        ]  # fmt: skip
        common = [f"callbacks={json.dumps(cbs)}", *m.extra]
        if m.epochs:
            common.append(f"train.epochs={m.epochs}")
        if m.lr is not None:
            common.append(f"optim.lr={m.lr}")
        step = 2.5 * b.eps / b.at_steps
        adv = (f"objective.eps={b.eps!r}", f"objective.steps={b.at_steps}",
               f"objective.step_size={step!r}")  # fmt: skip
        epochs_factor = (m.epochs or 3) / 3
        out = []
        for s in ctx.seeds:
            for kind, recipe, _ in MODELS:
                extra = [*common, *(adv if kind != "std" else ())]
                if kind == "fisher":
                    extra.append(f"objective.c={m.c!r}")
                spec = run_spec(_key(kind, s), b, recipe, s, extra, adversarial=kind != "std")
                factor = epochs_factor * (1.2 if kind == "fisher" else 1.0)
                out.append(replace(spec, cost=spec.cost * factor))
        return out

    def protocol(self, ctx: PlanContext) -> Protocol:
        b, m = self.budget(ctx), self.settings(ctx)
        return Protocol(
            dataset=b.dataset, n_test=m.n_test or b.n_test, eps=(b.eps,), main_eps=b.eps,
            pgd_steps=b.pgd_steps, aa_n=b.aa_n if m.aa_n is None else m.aa_n,
            checks_n=b.checks_n if m.checks_n is None else m.checks_n, analyses=("logits",),
        )  # fmt: skip

    def evaluations(self, ctx: PlanContext) -> list[EvalTarget]:
        p = self.protocol(ctx)
        return [EvalTarget(spec.key, p) for spec in self.runs(ctx)]

    def eval_cost(self, ctx: PlanContext) -> float:
        b, m = self.budget(ctx), self.settings(ctx)
        snapshots = len(ctx.seeds) * ((m.epochs or 3) + 2)  # every standard epoch, 2 finals
        return b.cost_eval * len(self.runs(ctx)) + snapshots * m.n_claims / 250

    # ------------------------------------------------------------------ data
    def data(self, ctx: PlanContext) -> dict[int, dict[str, Any]]:
        """Per seed: the standard run's per-epoch arrays, the robust runs' final ones, the logs."""
        if getattr(self, "_data", None) is not None:
            return self._data
        b, m = self.budget(ctx), self.settings(ctx)
        x, y = claims_images(b.dataset, m.n_claims)
        out: dict[int, dict[str, Any]] = {}
        for s in ctx.seeds:
            d: dict[str, Any] = {"std": epoch_arrays(ctx.run_dir(_key("std", s)), x, y)}
            for kind in ("at", "fisher"):
                d[kind] = epoch_arrays(ctx.run_dir(_key(kind, s)), x, y, epochs=[-1])
            d["logs"] = {k: logged_epochs(ctx.run_dir(_key(k, s))) for k, _, _ in MODELS}
            out[s] = d
        self._data = out
        return out

    def claims(self, ctx: PlanContext, results: Results) -> list[Claim]:
        from robustlab.reproduce.papers.metric_claims import c1, c2, c3

        data = self.data(ctx)
        return [c1(self, ctx, data), c2(self, ctx, data), c3(self, ctx, results, data)]

    def figures(self, ctx: PlanContext, results: Results) -> list[tuple[str, str, bytes]]:
        from robustlab.reproduce.papers.metric_figures import metric_figures

        return metric_figures(self, ctx, self.data(ctx))

    def claim(self, ctx: PlanContext, cid: str, statement: str, source: str, comps: list,
              **kw: Any) -> Claim:  # fmt: skip
        n = self.settings(ctx).n_claims
        return Claim(cid, self.name, statement, source, comps, list(ctx.seeds), n, **kw)


def robust_of(r: Results, key: str, eps: float) -> np.ndarray:
    return r.arrays(key)[f"robust_correct@{eps_label(eps)}"]


def spearman_over_epochs(a: np.ndarray, b: np.ndarray) -> Any:
    """``stat(idx)``: Spearman rho over epochs of the image means of ``a`` and ``b`` (E, N)."""
    return lambda idx: spearman(a[:, idx].mean(1), b[:, idx].mean(1))


def ms(values: list[float]) -> list[float]:
    m, sd = seed_stats(values)
    return [round(m, 4), round(sd, 4)]


__all__ += ["robust_of", "spearman_over_epochs", "ms", "fmt_eps", "mean_diff", "comparison"]
