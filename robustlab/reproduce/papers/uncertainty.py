"""Jin et al., arXiv:2011.13538: uncertainty-promoting regularizers (entropy
maximization, label smoothing) alone and with adversarial training; claims B1-B4.

Per seed ``s``: standard (``std-s``), EntM (``entm-s``), LS (``ls-s``), PGD-AT at eps (``at1-s``,
the same run as the logit paper's), AT+EntM (``atentm-s``) and AT+LS (``atls-s``). Every model is
evaluated at 0.25x to 2x the training eps under the per-sample worst case of PGD-CE and
PGD-margin (the CE-only number is kept for B4), with the logit-Jacobian norm (B3).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robustlab.reproduce.claims import Claim, comparison, mean_diff
from robustlab.reproduce.engine import EvalTarget, Results
from robustlab.reproduce.papers.common import (
    BUDGETS,
    Budget,
    at_overrides,
    band_curves,
    fmt_eps,
    grouped_bars,
    run_spec,
    seed_stats,
)
from robustlab.reproduce.plan import Paper, PlanContext, RunSpec, register_paper
from robustlab.reproduce.protocol import Protocol, eps_label

__all__ = ["UncertaintyPaper", "MODELS", "EPS_FACTORS", "NONE_LEVEL"]

# (run-name part, recipe, adversarial, label)
MODELS = (
    ("std", "standard", False, "Std"),
    ("entm", "entm", False, "EntM"),
    ("ls", "ls", False, "LS"),
    ("at1", "pgd_at", True, "AT"),
    ("atentm", "pgd_at_entm", True, "AT+EntM"),
    ("atls", "pgd_at_ls", True, "AT+LS"),
)
# recipes/paper has AT+EntM and AT+LS recipes but no standalone EntM / LS one: there they are
# the standard recipe with the regularizer of the AT+EntM / AT+LS recipes (same lambda, alpha).
PAPER_REGULARIZERS = {
    "entm": ("standard", ("objective.name=entm", "objective.entropy=1.0")),
    "ls": ("standard", ("objective.name=ls", "objective.label_smoothing=0.1")),
}
EPS_FACTORS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
# "about none" in B1: robust accuracy below this level (fixed before any result was seen).
NONE_LEVEL = 0.05


@register_paper("uncertainty")
class UncertaintyPaper(Paper):
    title = "B. Uncertainty-promoting regularizers and robustness (Jin et al. 2020)"
    claim_ids = ("B1", "B2", "B3", "B4")

    def budget(self, ctx: PlanContext) -> Budget:
        return BUDGETS[ctx.scale]

    def runs(self, ctx: PlanContext) -> list[RunSpec]:
        b = self.budget(ctx)
        out = []
        for s in ctx.seeds:
            for key, recipe, adv, _ in MODELS:
                extra: tuple[str, ...] = at_overrides(b, b.eps) if adv else ()
                if b.recipes == "paper" and recipe in PAPER_REGULARIZERS:
                    recipe, extra = PAPER_REGULARIZERS[recipe]
                out.append(run_spec(f"{key}-s{s}", b, recipe, s, extra, adversarial=adv))
        return out

    def protocol(self, ctx: PlanContext) -> Protocol:
        b = self.budget(ctx)
        return Protocol(
            dataset=b.dataset,
            n_test=b.n_test,
            eps=tuple(f * b.eps for f in EPS_FACTORS),
            main_eps=b.eps,
            pgd_steps=b.pgd_steps,
            aa_n=b.aa_n,
            checks_n=b.checks_n,
            analyses=("logits", "jacobian"),
            jacobian_n=b.jacobian_n,
        )

    def evaluations(self, ctx: PlanContext) -> list[EvalTarget]:
        p = self.protocol(ctx)
        return [EvalTarget(s.key, p) for s in self.runs(ctx)]

    def eval_cost(self, ctx: PlanContext) -> float:
        return 3 * self.budget(ctx).cost_eval * len(self.runs(ctx))

    # ------------------------------------------------------------------ helpers
    def _acc(self, r: Results, model: str, s: int, f: float | None, kind: str = "robust") -> Any:
        arr = r.arrays(f"{model}-s{s}")
        if f is None:
            return arr["clean_correct"]
        return arr[f"{kind}_correct@{eps_label(f * self.budget(r.ctx).eps)}"]

    def _cmp(
        self,
        ctx: PlanContext,
        r: Results,
        q: str,
        a: tuple,
        b: tuple | float,
        expect: int = 1,
        n: int | None = None,
    ) -> Any:
        """Compare per-sample arrays ``a`` = (model, eps factor) with ``b`` (same or a level)."""
        fa = [self._acc(r, a[0], s, a[1]) for s in ctx.seeds]
        fb = [b if isinstance(b, float) else self._acc(r, b[0], s, b[1]) for s in ctx.seeds]
        stats = [mean_diff(x, y) for x, y in zip(fa, fb, strict=True)]
        return comparison(
            q,
            stats,
            n or self.budget(ctx).n_test,
            expect=expect,
            details={"a": [float(np.mean(x)) for x in fa], "b": [float(np.mean(y)) for y in fb]},
        )

    def _claim(self, ctx: PlanContext, cid: str, statement: str, comps: list, **kw: Any) -> Claim:
        return Claim(
            cid,
            self.name,
            statement,
            "paper",
            comps,
            list(ctx.seeds),
            self.budget(ctx).n_test,
            **kw,
        )

    # ------------------------------------------------------------------ claims
    def claims(self, ctx: PlanContext, r: Results) -> list[Claim]:
        b = self.budget(ctx)
        e = fmt_eps(b.eps)
        b1 = []
        for m, label in (("entm", "EntM"), ("ls", "LS")):
            b1.append(
                self._cmp(ctx, r, f"robust acc at eps/4: {label} − Std", (m, 0.25), ("std", 0.25))
            )
            b1.append(
                self._cmp(
                    ctx,
                    r,
                    f"robust acc at eps {e}: {label} − {NONE_LEVEL}",
                    (m, 1.0),
                    NONE_LEVEL,
                    expect=-1,
                )
            )
        b2 = []
        for m, label in (("atentm", "AT+EntM"), ("atls", "AT+LS")):
            b2.append(self._cmp(ctx, r, f"clean acc: {label} − AT", (m, None), ("at1", None)))
            for f in (1.5, 2.0):
                b2.append(
                    self._cmp(ctx, r, f"robust acc at {f:g}x eps: {label} − AT", (m, f), ("at1", f))
                )
        b3, b4 = self._b3(ctx, r), self._b4(ctx, r)
        return [
            self._claim(
                ctx,
                "B1",
                "Entropy maximization and label smoothing alone raise robust "
                "accuracy above standard training at a small eps (eps/4) but leave about "
                f"none (below {NONE_LEVEL}) at the training eps, under the worst-case "
                "protocol.",
                b1,
                tables={"accuracy per test eps": self._table(ctx, r)},
            ),
            self._claim(
                ctx,
                "B2",
                "AT+EntM and AT+LS improve on AT in clean accuracy and in "
                "robust accuracy at eps above the training eps (1.5x, 2x).",
                b2,
            ),
            self._claim(
                ctx,
                "B3",
                "EntM shrinks the logit-Jacobian norm (AT+EntM below AT, EntM below standard).",
                b3,
                notes=f"Exact Frobenius norm of dz/dx on the first {b.jacobian_n} test images.",
            ),
            self._claim(
                ctx,
                "B4",
                "Evaluation warning: for AT+EntM at 2x the training eps, "
                "CE-only PGD reports more robustness than the worst case.",
                b4,
            ),
        ]

    def _b3(self, ctx: PlanContext, r: Results) -> list[Any]:
        """B3's comparisons: mean logit-Jacobian norms of the EntM models and their bases."""
        b = self.budget(ctx)
        b3 = []
        for hi, lo in (("at1", "atentm"), ("std", "entm")):
            jh = [r.arrays(f"{hi}-s{s}")["jacobian_frobenius"] for s in ctx.seeds]
            jl = [r.arrays(f"{lo}-s{s}")["jacobian_frobenius"] for s in ctx.seeds]
            b3.append(
                comparison(
                    f"mean logit-Jacobian Frobenius norm: {_label(hi)} − {_label(lo)}",
                    [mean_diff(x, y) for x, y in zip(jh, jl, strict=True)],
                    b.jacobian_n,
                    details={
                        "a": [float(x.mean()) for x in jh],
                        "b": [float(y.mean()) for y in jl],
                    },
                )
            )
        return b3

    def _b4(self, ctx: PlanContext, r: Results) -> list[Any]:
        """B4's comparison: CE-only PGD against the worst case for AT+EntM at 2x eps."""
        b = self.budget(ctx)
        ce = [self._acc(r, "atentm", s, 2.0, "ce") for s in ctx.seeds]
        wc = [self._acc(r, "atentm", s, 2.0) for s in ctx.seeds]
        b4 = [
            comparison(
                "AT+EntM accuracy at 2x eps: CE-only PGD − worst case of PGD-CE and PGD-margin",
                [mean_diff(x, y) for x, y in zip(ce, wc, strict=True)],
                b.n_test,
                details={
                    "ce_only": [float(x.mean()) for x in ce],
                    "worst_case": [float(y.mean()) for y in wc],
                },
            )
        ]
        return b4

    def _table(self, ctx: PlanContext, r: Results) -> dict[str, Any]:
        cols = (
            ["model", "clean"]
            + [f"{f:g}x eps" for f in EPS_FACTORS]
            + ["AutoAttack (eps)", "Jacobian norm"]
        )
        rows = []
        for key, _, _, label in MODELS:
            row: list[Any] = [label]
            for f in (None, *EPS_FACTORS):
                m, sd = seed_stats([float(self._acc(r, key, s, f).mean()) for s in ctx.seeds])
                row.append(f"{m:.3f} ± {sd:.3f}")
            aa = [
                r.summary(f"{key}-s{s}").get("autoattack", {}).get("robust_accuracy")
                for s in ctx.seeds
            ]
            aa = [v for v in aa if v is not None]
            row.append(f"{np.mean(aa):.3f}" if aa else "n/a")
            jac = [float(r.arrays(f"{key}-s{s}")["jacobian_frobenius"].mean()) for s in ctx.seeds]
            row.append(f"{np.mean(jac):.2f}")
            rows.append(row)
        return {"columns": cols, "rows": rows}

    def figures(self, ctx: PlanContext, r: Results) -> list[tuple[str, str, bytes]]:
        b = self.budget(ctx)
        xs = [0.0] + [f * b.eps for f in EPS_FACTORS]
        series = {
            label: [
                [float(self._acc(r, key, s, f).mean()) for s in ctx.seeds]
                for f in (None, *EPS_FACTORS)
            ]
            for key, _, _, label in MODELS
        }
        out = [
            (
                "accuracy_vs_eps.png",
                f"B1/B2: accuracy against test eps (worst case of PGD-CE "
                f"and PGD-margin; training eps {b.eps:g}); line: mean over seeds {ctx.seeds}, "
                "band: min to max",
                band_curves(xs, series, "test eps (Linf)", "accuracy"),
            )
        ]
        ce = {
            f"AT+EntM {k}": [
                [float(self._acc(r, "atentm", s, f, k).mean()) for s in ctx.seeds]
                for f in EPS_FACTORS
            ]
            for k in ("ce", "robust")
        }
        ce = {
            k.replace("robust", "worst case").replace(" ce", " CE-only PGD"): v
            for k, v in ce.items()
        }
        out.append(
            (
                "ce_vs_worst_case.png",
                "B4: AT+EntM accuracy under CE-only PGD and under the worst case, per test eps",
                band_curves([f * b.eps for f in EPS_FACTORS], ce, "test eps (Linf)", "accuracy"),
            )
        )
        jac = {
            "mean |dz/dx|_F": [
                [float(r.arrays(f"{key}-s{s}")["jacobian_frobenius"].mean()) for s in ctx.seeds]
                for key, _, _, _ in MODELS
            ]
        }
        out.append(
            (
                "jacobian_norms.png",
                f"B3: logit-Jacobian Frobenius norm per model (first "
                f"{b.jacobian_n} test images; bar: mean over seeds, dots: seeds)",
                grouped_bars([m[3] for m in MODELS], jac, "mean |dz/dx|_F"),
            )
        )
        return out


def _label(key: str) -> str:
    return {k: lab for k, _, _, lab in MODELS}[key]
