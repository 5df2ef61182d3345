"""A toy paper for the reproduce engine's tests: three short mnist-mini runs (one needing
another), a tiny evaluation protocol and one claim. Importing this module registers it."""

from __future__ import annotations

from robustlab.reproduce import (
    Claim,
    EvalTarget,
    Paper,
    PlanContext,
    Protocol,
    Results,
    RunSpec,
    comparison,
    mean_diff,
    register_paper,
)

OVERRIDES = (
    "data.dataset=mnist-mini",
    "data.n_train=256",
    "data.n_val=0",
    "validation.every=0",
    "train.epochs=3",
    "data.batch_size=64",
    "train.progress=false",
    "train.tensorboard=false",
    "train.checkpoint_every=1",
)


@register_paper("toy")
class ToyPaper(Paper):
    title = "Toy paper (engine tests)"
    claim_ids = ("T1",)

    def runs(self, ctx: PlanContext) -> list[RunSpec]:
        out = []
        for s in ctx.seeds:
            for name in ("a", "b"):
                out.append(
                    RunSpec(
                        f"{name}-s{s}",
                        "cpu/standard.yaml",
                        (f"name={name}-s{s}", f"seed={s}", *OVERRIDES),
                        seed=s,
                    )
                )
            out.append(
                RunSpec(
                    f"c-s{s}",
                    "cpu/standard.yaml",
                    (f"name=c-s{s}", f"seed={s + 7}", *OVERRIDES),
                    needs=(f"a-s{s}",),
                    seed=s,
                )
            )
        return out

    def protocol(self) -> Protocol:
        return Protocol(
            "mnist-mini",
            n_test=32,
            eps=(0.1,),
            main_eps=0.1,
            pgd_steps=2,
            aa_n=0,
            checks_n=0,
            analyses=("logits",),
        )

    def evaluations(self, ctx: PlanContext) -> list[EvalTarget]:
        return [EvalTarget(s.key, self.protocol()) for s in self.runs(ctx)]

    def claims(self, ctx: PlanContext, results: Results) -> list[Claim]:
        stats = [
            mean_diff(
                results.arrays(f"a-s{s}")["logits/max_logit"],
                results.arrays(f"b-s{s}")["logits/max_logit"],
            )
            for s in ctx.seeds
        ]
        comp = comparison("max logit a - b", stats, 32, n_boot=50)
        return [Claim("T1", self.name, "a and b differ", "recon", [comp], list(ctx.seeds), 32)]


@register_paper("toyfail")
class ToyFailPaper(ToyPaper):
    """Run ``b`` cannot start (unknown objective) and ``c`` needs it: the plan must train
    ``a``, evaluate it, report ``b`` failed and ``c`` skipped, and write no claims."""

    title = "Toy paper with a failing run"

    def runs(self, ctx: PlanContext) -> list[RunSpec]:
        a, b, _ = super().runs(ctx)[:3]
        b = RunSpec(b.key, b.recipe, (*b.overrides, "objective.name=nope"), seed=b.seed)
        c = RunSpec("c-s0", a.recipe, (*a.overrides[2:], "name=c-s0", "seed=7"), needs=(b.key,))
        return [a, b, c]
