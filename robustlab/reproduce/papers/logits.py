"""Seguin et al., arXiv:2108.12001: logit distributions of adversarially trained
networks and clean-input distillation with manipulated teacher logits; claims A1-A4.

Per seed ``s``: a standard model (``std-s``), a second standard model of another seed
(``stdb-s``, the control of A2), PGD-AT at eps/4, eps/2 and eps (``at{f}-s``), one student per
teacher (the intact AT(eps) teacher, its five manipulations, the standard teacher, hard
labels: ``student-<m>-s``), and for A4 a standard SmallCNN on MNIST (``smallcnn-mnist-s``)
compared with the TRADES authors' SmallCNN (``../shared/models``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from robustlab.reproduce.claims import Claim, comparison, mean_diff
from robustlab.reproduce.engine import EvalTarget, Results
from robustlab.reproduce.papers.common import (
    BUDGETS,
    Budget,
    a4_dataset,
    at_overrides,
    fmt_eps,
    run_spec,
    seed_stats,
)
from robustlab.reproduce.plan import Paper, PlanContext, ReproduceError, RunSpec, register_paper
from robustlab.reproduce.protocol import Protocol, eps_label
from robustlab.train.rundir import RunDir

__all__ = ["LogitsPaper", "TEACHERS", "AT_FRACTIONS", "trades_checkpoint"]

AT_FRACTIONS = (0.25, 0.5, 1.0)
# (run-name part, distill manipulation, label): the intact teacher, the manipulations, references
TEACHERS = (
    ("intact", "none", "AT intact"),
    ("shuffle", "shuffle", "shuffle"),
    ("sorted_resample", "sorted_resample", "sorted_resample"),
    ("conf_swap", "conf_swap", "conf_swap"),
    ("std_order", "std_order", "std_order"),
    ("mean", "mean", "mean"),
    ("std_teacher", "standard_teacher", "standard teacher"),
    ("hard", "hard_labels", "hard labels"),
)
A4_EPS = 0.3  # the TRADES SmallCNN's training eps (MNIST)


def trades_checkpoint() -> Path:
    """``$ROBUSTLAB_SHARED/models/trades_mnist_smallcnn.pt`` (default ``../shared`` of the repo)."""
    root = os.environ.get("ROBUSTLAB_SHARED")
    base = Path(root) if root else Path(__file__).resolve().parents[4] / "shared"
    return base / "models" / "trades_mnist_smallcnn.pt"


def _at_key(f: float, s: int) -> str:
    return f"at{f:g}-s{s}"


@register_paper("logits")
class LogitsPaper(Paper):
    title = "A. Logit distributions of adversarially trained networks (Seguin et al. 2021)"
    claim_ids = ("A1", "A2", "A3", "A4")

    def budget(self, ctx: PlanContext) -> Budget:
        return BUDGETS[ctx.scale]

    def check_ready(self, ctx: PlanContext) -> None:
        if not trades_checkpoint().is_file():
            raise ReproduceError(
                f"A4 needs the TRADES SmallCNN at {trades_checkpoint()} (set ROBUSTLAB_SHARED)"
            )

    def runs(self, ctx: PlanContext) -> list[RunSpec]:
        b = self.budget(ctx)
        out: list[RunSpec] = []
        for s in ctx.seeds:
            out.append(run_spec(f"std-s{s}", b, "standard", s))
            out.append(run_spec(f"stdb-s{s}", b, "standard", s + 1000))
            for f in AT_FRACTIONS:
                out.append(
                    run_spec(
                        _at_key(f, s), b, "pgd_at", s, at_overrides(b, f * b.eps), adversarial=True
                    )
                )
            teacher = RunDir(ctx.run_dir(_at_key(1.0, s))).checkpoint("best")
            std = RunDir(ctx.run_dir(f"std-s{s}")).checkpoint("best")
            for name, manip, _ in TEACHERS:
                extra = (
                    f"objective.teacher={teacher}",
                    f"objective.teacher_model={b.model}",
                    f"objective.std_teacher={std}",
                    f"objective.std_teacher_model={b.model}",
                    f"objective.manipulation={manip}",
                    f"objective.seed={s}",
                    # tau^2 = 16 scales the KL gradient: a standard-teacher student went to NaN
                    # at lr 0.05 in the first attempt; every student is clipped alike.
                    "optim.clip_grad_norm=5.0",
                )
                out.append(
                    run_spec(
                        f"student-{name}-s{s}",
                        b,
                        "distill",
                        s,
                        extra,
                        needs=(_at_key(1.0, s), f"std-s{s}"),
                    )
                )
            out.append(
                run_spec(
                    f"smallcnn-mnist-s{s}",
                    b,
                    "standard",
                    s,
                    (f"data.dataset={a4_dataset(b)}", "model.name=smallcnn"),
                )
            )
        return out

    def protocol(self, ctx: PlanContext, mnist: bool = False) -> Protocol:
        b = self.budget(ctx)
        eps = A4_EPS if mnist else b.eps
        return Protocol(
            dataset=a4_dataset(b) if mnist else b.dataset,
            n_test=b.n_test,
            eps=(eps,),
            main_eps=eps,
            pgd_steps=b.pgd_steps,
            aa_n=b.aa_n,
            checks_n=b.checks_n,
            analyses=("logits",),
        )

    def evaluations(self, ctx: PlanContext) -> list[EvalTarget]:
        p, pm = self.protocol(ctx), self.protocol(ctx, mnist=True)
        out = [EvalTarget("trades-smallcnn", pm, external="trades-smallcnn")]
        for spec in self.runs(ctx):
            out.append(EvalTarget(spec.key, pm if spec.key.startswith("smallcnn") else p))
        return out

    def eval_cost(self, ctx: PlanContext) -> float:
        return self.budget(ctx).cost_eval * (len(self.runs(ctx)) + 1)

    def load_external(self, name: str) -> Any:
        from robustlab.models import create_model, load_checkpoint

        if name != "trades-smallcnn":
            return super().load_external(name)
        model = create_model("smallcnn", dataset="mnist")
        load_checkpoint(model, trades_checkpoint())
        return model.eval()

    # ------------------------------------------------------------------ claims
    def claims(self, ctx: PlanContext, results: Results) -> list[Claim]:
        return [
            self._a1(ctx, results),
            self._a2(ctx, results),
            self._a3(ctx, results),
            self._a4(ctx, results),
        ]

    def _stat(self, r: Results, key: str, name: str) -> np.ndarray:
        return r.arrays(key)[f"logits/{name}"]

    def _claim(
        self, ctx: PlanContext, cid: str, statement: str, source: str, comps: list, **kw: Any
    ) -> Claim:
        return Claim(
            cid, self.name, statement, source, comps, list(ctx.seeds), self.budget(ctx).n_test, **kw
        )

    def _a1(self, ctx: PlanContext, r: Results) -> Claim:
        b, seeds, comps = self.budget(ctx), ctx.seeds, []
        chain = [("std", 0.0)] + [(f"at{f:g}", f * b.eps) for f in AT_FRACTIONS]
        n = b.n_test
        for stat, label in (("max_logit", "mean max logit"), ("gap", "mean logit gap")):
            pairs = [(chain[0], chain[-1])] + list(zip(chain[:-1], chain[1:], strict=True))
            for (ka, ea), (kb, eb) in pairs:
                fa = [self._stat(r, f"{ka}-s{s}", stat) for s in seeds]
                fb = [self._stat(r, f"{kb}-s{s}", stat) for s in seeds]
                comps.append(
                    comparison(
                        f"{label}: train eps {fmt_eps(ea)} − {fmt_eps(eb)}",
                        [mean_diff(a, c) for a, c in zip(fa, fb, strict=True)],
                        n,
                        details={
                            "a": [float(a.mean()) for a in fa],
                            "b": [float(c.mean()) for c in fb],
                        },
                    )
                )
        rows = []
        for k, e in chain:
            ml = [float(self._stat(r, f"{k}-s{s}", "max_logit").mean()) for s in seeds]
            gp = [float(self._stat(r, f"{k}-s{s}", "gap").mean()) for s in seeds]
            rows.append([fmt_eps(e), *_ms(ml), *_ms(gp)])
        table = {"columns": ["train eps", "max logit mean", "sd", "gap mean", "sd"], "rows": rows}
        return self._claim(
            ctx,
            "A1",
            "AT lowers the mean max logit and the mean logit gap against standard "
            "training, and both fall as the training eps grows (0, eps/4, eps/2, eps).",
            "paper",
            comps,
            tables={"max logit and gap per training eps": table},
        )

    def _a2(self, ctx: PlanContext, r: Results) -> Claim:
        from robustlab.analysis.logits import spearman

        stats, rho_ctrl, rho_at = [], [], []
        for s in ctx.seeds:
            c0 = self._stat(r, f"std-s{s}", "confidence")
            c1 = self._stat(r, f"stdb-s{s}", "confidence")
            ca = self._stat(r, _at_key(1.0, s), "confidence")
            rho_ctrl.append(spearman(c0, c1))
            rho_at.append(spearman(c0, ca))
            stats.append(
                lambda idx, c0=c0, c1=c1, ca=ca: (
                    spearman(c0[idx], c1[idx]) - spearman(c0[idx], ca[idx])
                )
            )
        comp = comparison(
            "Spearman rho of confidence ranks: std vs std (other seed) − std vs AT",
            stats,
            self.budget(ctx).n_test,
            n_boot=500,
            details={"rho_std_std": rho_ctrl, "rho_std_at": rho_at},
        )
        return self._claim(
            ctx,
            "A2",
            "AT and standard models disagree about which samples are confident: the "
            "Spearman correlation of confidence ranks between a standard and an AT model is "
            "lower than between two standard models of different seeds.",
            "recon",
            [comp],
            notes="Confidence = max softmax probability; ranks over the same test images.",
        )

    def _robust(self, r: Results, key: str, eps: float) -> np.ndarray:
        return r.arrays(key)[f"robust_correct@{eps_label(eps)}"]

    def _a3(self, ctx: PlanContext, r: Results) -> Claim:
        b, seeds, comps = self.budget(ctx), ctx.seeds, []
        order = [
            ("intact", "mean"),
            ("intact", "shuffle"),
            ("mean", "std_teacher"),
            ("mean", "hard"),
            ("shuffle", "std_teacher"),
            ("shuffle", "hard"),
        ]
        for hi, lo in order:
            a = [self._robust(r, f"student-{hi}-s{s}", b.eps) for s in seeds]
            c = [self._robust(r, f"student-{lo}-s{s}", b.eps) for s in seeds]
            comps.append(
                comparison(
                    f"student robust acc (eps {fmt_eps(b.eps)}): {hi} − {lo}",
                    [mean_diff(x, y) for x, y in zip(a, c, strict=True)],
                    b.n_test,
                )
            )
        rows = []
        for name, _, label in TEACHERS:
            keys = [f"student-{name}-s{s}" for s in seeds]
            clean = [r.summary(k)["clean_accuracy"] for k in keys]
            rob = [r.summary(k)["robust_accuracy"][eps_label(b.eps)] for k in keys]
            aa = [r.summary(k).get("autoattack", {}).get("robust_accuracy") for k in keys]
            rows.append([label, *_ms(clean), *_ms(rob), *_ms([v for v in aa if v is not None])])
        table = {
            "columns": [
                "teacher",
                "clean",
                "sd",
                "robust (PGD-CE/margin worst)",
                "sd",
                f"AutoAttack (first {b.aa_n})",
                "sd",
            ],
            "rows": rows,
        }
        return self._claim(
            ctx,
            "A3",
            "What the AT teacher says about the incorrect classes carries robustness: "
            "students distilled on clean inputs rank intact > {mean, shuffle} > {standard teacher, "
            "hard labels} in robust accuracy.",
            "paper",
            comps,
            tables={"every student's clean and robust accuracy": table},
            notes="Distillation on clean inputs and the manipulations are reconstructions.",
        )

    def _a4(self, ctx: PlanContext, r: Results) -> Claim:
        b, comps = self.budget(ctx), []
        for stat, label in (("max_logit", "mean max logit"), ("gap", "mean logit gap")):
            t = self._stat(r, "trades-smallcnn", stat)
            comps.append(
                comparison(
                    f"{label} (MNIST): standard SmallCNN − TRADES SmallCNN",
                    [mean_diff(self._stat(r, f"smallcnn-mnist-s{s}", stat), t) for s in ctx.seeds],
                    b.n_test,
                    details={"trades": float(t.mean())},
                )
            )
        return self._claim(
            ctx,
            "A4",
            "External check: the TRADES SmallCNN (third-party AT model) has a lower "
            "max logit and gap than a standard SmallCNN trained by robustlab on the same data, "
            "on the same test images.",
            "paper",
            comps,
            notes="Seeds vary the standard SmallCNN; the TRADES model is one fixed checkpoint.",
        )

    def figures(self, ctx: PlanContext, r: Results) -> list[tuple[str, str, bytes]]:
        from robustlab.reproduce.papers.logits_figures import logits_figures

        return logits_figures(self, ctx, r)


def _ms(values: list[float]) -> list[float]:
    if not values:
        return [float("nan"), float("nan")]
    m, sd = seed_stats(values)
    return [round(m, 4), round(sd, 4)]
