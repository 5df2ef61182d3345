"""The `dyart` paper (Xu et al., ICLR 2023): decision-boundary dynamics and DyART; claims D1-D4.

Per seed ``s``: a naturally trained burn-in (``dyart-burnin-s``), a partly robust checkpoint
(``dyart-atpart-s``: PGD-AT for ``atpart_epochs`` from the burn-in), and from the same burn-in
PGD-AT (``dyart-at-s``) and DyART (``dyart-dyart-s``) for the same number of epochs with the
same optimizer and schedule (the matched budget is in epochs; each DyART epoch costs more,
reported). The dynamics (D1, D2) are measured on the live weights of the burn-in and partly
robust checkpoints (no EMA in these runs), on ``n_batches`` seeded training batches, with the
velocity of each objective on the exact batch (``velocity: exact``) or averaged over the
batches (``mean``); D4 checks the closed-form speed against one real SGD step.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from robustlab.reproduce.claims import Claim
from robustlab.reproduce.engine import EvalTarget, Results
from robustlab.reproduce.papers.common import BUDGETS, Budget, run_spec
from robustlab.reproduce.plan import Paper, PlanContext, RunSpec, register_paper
from robustlab.reproduce.protocol import Protocol

__all__ = ["DyartPaper", "DyartScale", "DYART_SCALES", "EPS_FACTORS", "CHECKPOINTS"]

EPS_FACTORS = (0.5, 0.75, 1.0, 1.5, 2.0)
# PGD-AT and DyART train with the same optimizer: the DyART recipes' Nesterov momentum and
# gradient-norm clipping (1.0 at cpu scale) are applied to both.
SAME_OPTIM = ("optim.nesterov=true", "optim.clip_grad_norm=1.0")
CHECKPOINTS = (("burnin", "natural burn-in"), ("atpart", "partly robust"))


@dataclass(frozen=True)
class DyartScale:
    """The `dyart` paper's settings on top of a scale's shared budget (see the module docstring).

    DyART: ``lam``, ``alpha``, ``r0`` (``r0_factor`` x eps), ``fab_steps``; dynamics:
    ``n_batches`` batches of ``batch`` training images, ``velocity``, ``margin_steps``;
    D4: ``d4_n`` test images, SGD rate ``d4_lr``; ``substantial``: the fraction of
    small-margin points with negative speed that counts as substantial in D1.
    """

    burnin_epochs: int
    atpart_epochs: int
    epochs: int
    lam: float
    alpha: float
    r0_factor: float
    fab_steps: int
    n_batches: int
    batch: int
    velocity: str
    margin_steps: int
    d4_n: int
    d4_lr: float
    n_margin: int
    substantial: float = 0.1
    n_test: int | None = None  # test images of the protocol (None: the shared budget's)
    aa_n: int | None = None  # AutoAttack images (None: the shared budget's)
    checks_n: int | None = None  # images of the gradient-masking checks (None: the budget's)
    n_train_after: int | None = None  # training images after the burn-in (None: the budget's)
    extra: tuple[str, ...] = ()


DYART_SCALES = {
    # Fixed from preliminary runs on seed 100 (not a verdict seed; docs/results/dyart/README.md):
    # a 1-epoch burn-in classified 45% of a training batch (most points drop out with margin
    # 0), so 2 epochs; lam 50 makes the margin term's velocity comparable to CE's (4.6 vs 8.6
    # at the burn-in, 4.5 vs 1.7 after 1 AT epoch); 30 FAB steps give margins within 1% of
    # 100 steps at a third of the cost; D4 at lr 0.005 (at the training lr 0.05 only 4 of 32
    # points stay correct and verified). 2 epochs of PGD-AT / DyART on 2,000 images after the
    # burn-in to fit the time budget on the shared machine (a DyART epoch costs about 3 PGD-AT
    # epochs; the machine ran at load 20-28 on 2 cores). Protocol on 200 test images
    # (AutoAttack 20, checks 16) for the same reason.
    "cpu": DyartScale(
        burnin_epochs=2, atpart_epochs=1, epochs=2, lam=50.0, alpha=3.0, r0_factor=2.0,
        fab_steps=10, n_batches=3, batch=64, velocity="exact", margin_steps=30, d4_n=32,
        d4_lr=5e-3, n_margin=50, n_test=200, n_train_after=2000, aa_n=20, checks_n=16,
    ),
    "gpu": DyartScale(
        burnin_epochs=3, atpart_epochs=2, epochs=12, lam=1000.0, alpha=3.0, r0_factor=2.0,
        fab_steps=20, n_batches=8, batch=256, velocity="exact", margin_steps=100, d4_n=128,
        d4_lr=1e-3, n_margin=500,
    ),
    "paper": DyartScale(
        burnin_epochs=10, atpart_epochs=20, epochs=190, lam=1000.0, alpha=3.0, r0_factor=2.0,
        fab_steps=20, n_batches=16, batch=256, velocity="exact", margin_steps=100, d4_n=256,
        d4_lr=1e-3, n_margin=1000,
    ),
    "tiny": DyartScale(
        burnin_epochs=1, atpart_epochs=1, epochs=1, lam=50.0, alpha=3.0, r0_factor=2.0,
        fab_steps=3, n_batches=1, batch=16, velocity="exact", margin_steps=10, d4_n=8,
        d4_lr=1e-3, n_margin=8,
    ),
}  # fmt: skip


def key(kind: str, s: int) -> str:
    return f"dyart-{kind}-s{s}"


@register_paper("dyart")
class DyartPaper(Paper):
    title = "D. Decision-boundary dynamics and DyART (Xu et al. 2023)"
    claim_ids = ("D1", "D2", "D3", "D4")

    def budget(self, ctx: PlanContext) -> Budget:
        return BUDGETS[ctx.scale]

    def settings(self, ctx: PlanContext) -> DyartScale:
        return DYART_SCALES[ctx.scale]

    def objective_params(self, ctx: PlanContext, kind: str) -> dict[str, Any]:
        """The hyperparameters of ``pgd_at`` or ``dyart`` (after the shared burn-in)."""
        b, d = self.budget(ctx), self.settings(ctx)
        if kind == "pgd_at":
            return {"eps": b.eps, "steps": b.at_steps, "step_size": 2.5 * b.eps / b.at_steps}
        return {"eps": b.eps, "burn_in": 0, "lam": d.lam, "alpha": d.alpha,
                "r0": d.r0_factor * b.eps, "fab_steps": d.fab_steps}  # fmt: skip

    def runs(self, ctx: PlanContext) -> list[RunSpec]:
        b, d = self.budget(ctx), self.settings(ctx)
        out = []
        for s in ctx.seeds:
            burn = key("burnin", s)
            weights = f"model.weights={ctx.run_dir(burn)}"
            burn_over = (f"train.epochs={d.burnin_epochs}", *d.extra)
            out.append(run_spec(burn, b, "standard", s, burn_over))
            for kind, recipe, epochs in (
                ("atpart", "pgd_at", d.atpart_epochs),
                ("at", "pgd_at", d.epochs),
                ("dyart", "dyart", d.epochs),
            ):
                params = self.objective_params(ctx, recipe)
                over = [f"objective.{k}={v!r}" for k, v in params.items()]
                over += list(SAME_OPTIM)
                if d.n_train_after:
                    over.append(f"data.n_train={d.n_train_after}")
                spec = run_spec(key(kind, s), b, recipe, s,
                                (*over, f"train.epochs={epochs}", weights, *d.extra),
                                needs=(burn,), adversarial=True)  # fmt: skip
                factor = epochs / 3 * (2.5 if recipe == "dyart" else 1.0)
                out.append(replace(spec, cost=spec.cost * factor))
        return out

    def n_test(self, ctx: PlanContext) -> int:
        return self.settings(ctx).n_test or self.budget(ctx).n_test

    def aa_n(self, ctx: PlanContext) -> int:
        d = self.settings(ctx)
        return self.budget(ctx).aa_n if d.aa_n is None else d.aa_n

    def eps_values(self, ctx: PlanContext) -> tuple[float, ...]:
        return tuple(f * self.budget(ctx).eps for f in EPS_FACTORS)

    def protocol(self, ctx: PlanContext) -> Protocol:
        b, d = self.budget(ctx), self.settings(ctx)
        return Protocol(
            dataset=b.dataset, n_test=self.n_test(ctx), eps=self.eps_values(ctx), main_eps=b.eps,
            pgd_steps=b.pgd_steps, aa_n=self.aa_n(ctx),
            checks_n=b.checks_n if d.checks_n is None else d.checks_n, analyses=("logits",),
        )  # fmt: skip

    def evaluations(self, ctx: PlanContext) -> list[EvalTarget]:
        p = self.protocol(ctx)
        return [EvalTarget(key(k, s), p) for s in ctx.seeds for k in ("burnin", "at", "dyart")]

    def eval_cost(self, ctx: PlanContext) -> float:
        d = self.settings(ctx)
        dyn = len(ctx.seeds) * (2 * d.n_batches * d.batch / 128 * 20 + d.d4_n / 2)
        return self.budget(ctx).cost_eval * 2 * 3 * len(ctx.seeds) + dyn

    # ------------------------------------------------------------------ claims
    def data(self, ctx: PlanContext) -> dict[int, dict[str, Any]]:
        if getattr(self, "_data", None) is None:
            from robustlab.reproduce.papers.dyart_data import seed_data

            self._data = {s: seed_data(self, ctx, s) for s in ctx.seeds}
        return self._data

    def claims(self, ctx: PlanContext, results: Results) -> list[Claim]:
        from robustlab.reproduce.papers.dyart_claims import d1, d2, d3, d4

        data = self.data(ctx)
        return [d1(self, ctx, data), d2(self, ctx, data), d3(self, ctx, results, data),
                d4(self, ctx, data)]  # fmt: skip

    def figures(self, ctx: PlanContext, results: Results) -> list[tuple[str, str, bytes]]:
        from robustlab.reproduce.papers.dyart_figures import dyart_figures

        return dyart_figures(self, ctx, results, self.data(ctx))

    def claim(self, ctx: PlanContext, cid: str, statement: str, source: str, comps: list,
              n: int, **kw: Any) -> Claim:  # fmt: skip
        return Claim(cid, self.name, statement, source, comps, list(ctx.seeds), n, **kw)
