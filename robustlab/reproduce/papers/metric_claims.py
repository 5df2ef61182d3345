"""Claims C1-C3 of the `metric` paper from the per-image arrays of :mod:`metric_data` and the
protocol."""

from __future__ import annotations

from typing import Any

import numpy as np

from robustlab.reproduce.claims import Claim, comparison, mean_diff
from robustlab.reproduce.engine import Results
from robustlab.reproduce.papers.common import fmt_eps
from robustlab.reproduce.papers.metric import (
    MODELS,
    MetricPaper,
    ms,
    robust_of,
    spearman_over_epochs,
)
from robustlab.reproduce.plan import PlanContext

__all__ = ["c1", "c2", "c3", "matched_epoch"]


def c1(paper: MetricPaper, ctx: PlanContext, data: dict[int, dict[str, Any]]) -> Claim:
    n, seeds = paper.settings(ctx).n_claims, ctx.seeds
    std = [data[s]["std"] for s in seeds]
    comps = [
        comparison(
            "standard training, Spearman rho over epochs: KL metric vs clean accuracy",
            [spearman_over_epochs(d["kl"], d["correct"]) for d in std],
            n,
            n_boot=300,
        ),
        comparison(
            "standard training, Spearman rho over epochs: input Fisher norm vs KL metric",
            [spearman_over_epochs(d["fisher"], d["kl"]) for d in std],
            n,
            n_boot=300,
        ),
    ]
    rows = []
    for i, e in enumerate(std[0]["epoch"]):
        logs = [data[s]["logs"]["std"][int(e)] for s in seeds]
        rows.append(
            [int(e) + 1,
             *ms([float(d["correct"][i].mean()) for d in std]),
             *ms([float(d["kl"][i].mean()) for d in std]),
             *ms([float(d["fisher"][i].mean()) for d in std]),
             *ms([float(r.get("analysis/fisher_top_eig", np.nan)) for r in logs])]
        )  # fmt: skip
    table = {
        "columns": ["epoch", "clean acc", "sd", "KL metric", "sd", "Fisher norm", "sd",
                    "top eigenvalue (callback)", "sd"],
        "rows": rows,
    }  # fmt: skip
    return paper.claim(
        ctx,
        "C1",
        "During standard training the cross-class KL metric rises with test accuracy, and the "
        "input Fisher norm rises with the metric.",
        "paper",
        comps,
        tables={"standard training per epoch (means over seeds)": table},
        notes="Per epoch, on the first test images: accuracy, the KL metric (mean over anchors "
        "of the mean KL to every image of another class) and the Frobenius norm of the input "
        "Fisher information, from each epoch's snapshot. The Fisher norm as the metric's "
        "non-robust carrier follows the authors' code [code]; the grouping is (reconstruction).",
    )


def matched_epoch(std_correct: np.ndarray, target_acc: float) -> int:
    """Index of the standard epoch whose clean accuracy is closest to ``target_acc``."""
    return int(np.argmin(np.abs(std_correct.mean(1) - target_acc)))


def _log_ratio(a: np.ndarray, b: np.ndarray) -> Any:
    return lambda idx: float(np.log(a[idx].mean()) - np.log(b[idx].mean()))


def c2(paper: MetricPaper, ctx: PlanContext, data: dict[int, dict[str, Any]]) -> Claim:
    n, seeds, comps, rows = paper.settings(ctx).n_claims, ctx.seeds, [], []
    for kind, label in (("at", "PGD-AT"), ("fisher", "Fisher reg.")):
        match = []
        for s in seeds:
            d = data[s]
            acc = float(d[kind]["correct"][0].mean())
            e = matched_epoch(d["std"]["correct"], acc)
            match.append((e, acc, float(d["std"]["correct"][e].mean())))
        for field, name, log in (
            ("fisher", "input Fisher norm, log ratio", True),
            ("kl", "KL metric, difference", False),
            ("fisher_unit", "input Fisher norm at unit logit scale, log ratio", True),
            ("kl_unit", "KL metric at unit logit scale, difference", False),
        ):
            a = [data[s]["std"][field][m[0]] for s, m in zip(seeds, match, strict=True)]
            b = [data[s][kind][field][0] for s in seeds]
            f = _log_ratio if log else mean_diff
            comps.append(
                comparison(
                    f"{name}: standard (epoch of matched clean acc) vs {label}",
                    [f(x, y) for x, y in zip(a, b, strict=True)],
                    n,
                    n_boot=300,
                    details={
                        "standard": [float(x.mean()) for x in a],
                        label: [float(y.mean()) for y in b],
                        "matched_epoch": [m[0] + 1 for m in match],
                    },
                )
            )
        fis = [float(data[s][kind]["fisher"][0].mean()) for s in seeds]
        fis_std = [float(data[s]["std"]["fisher"][m[0]].mean())
                   for s, m in zip(seeds, match, strict=True)]  # fmt: skip
        rows.append(
            [label, *ms([m[1] for m in match]), *ms([m[2] for m in match]),
             "/".join(str(m[0] + 1) for m in match), *ms(fis), *ms(fis_std),
             *ms([float(data[s][kind]["scale"][0]) for s in seeds])]
        )  # fmt: skip
    final = {k: [float(np.mean(data[s]["std"][k][-1])) for s in seeds]
             for k in ("correct", "fisher", "scale")}  # fmt: skip
    rows.append(["standard (final)", *ms(final["correct"]), "", "", "", *ms(final["fisher"]),
                 "", "", *ms(final["scale"])])  # fmt: skip
    table = {
        "columns": ["model", "clean acc", "sd", "matched standard acc", "sd", "matched epochs",
                    "Fisher norm", "sd", "standard Fisher (matched)", "sd", "logit scale", "sd"],
        "rows": rows,
    }  # fmt: skip
    return paper.claim(
        ctx,
        "C2",
        "Adversarial training and the Fisher regularizer reach comparable clean accuracy with a "
        "much lower input Fisher norm and a lower KL metric than standard training (also after "
        "normalizing the logit scale).",
        "paper",
        comps,
        tables={"matched clean accuracy": table},
        notes="Matched: per seed, the standard epoch whose clean accuracy on the claim images is "
        "closest to the final robust model's. Unit logit scale: logits divided by their mean "
        "per-image std over classes (reconstruction), so shrinking logits alone cannot lower "
        "the numbers.",
    )


def c3(paper: MetricPaper, ctx: PlanContext, r: Results, data: dict[int, dict[str, Any]]) -> Claim:
    b, seeds = paper.budget(ctx), ctx.seeds
    eps = b.eps
    std = [robust_of(r, f"metric-std-s{s}", eps) for s in seeds]
    fis = [robust_of(r, f"metric-fisher-s{s}", eps) for s in seeds]
    sec = {k: [float(np.mean([e["time_s"] for e in data[s]["logs"][k]])) for s in seeds]
           for k, _, _ in MODELS}  # fmt: skip
    comps = [
        comparison(
            f"robust accuracy (eps {fmt_eps(eps)}, worst of PGD-CE and PGD-margin): "
            "Fisher reg. − standard",
            [mean_diff(f, s) for f, s in zip(fis, std, strict=True)],
            paper.protocol(ctx).n_test,
        ),
        comparison(
            "seconds per training epoch: PGD-AT − Fisher reg.",
            [lambda idx, v=a - f: v for a, f in zip(sec["at"], sec["fisher"], strict=True)],
            paper.protocol(ctx).n_test,
            n_boot=10,
            details={"PGD-AT": sec["at"], "Fisher reg.": sec["fisher"]},
        ),
    ]
    steps = b.at_steps
    passes = {"std": "1 fwd + 1 bwd", "at": f"{steps + 1} fwd + {steps + 1} bwd",
              "fisher": f"{steps + 2} fwd + {steps + 1} bwd (outer bwd through 2 fwd)"}  # fmt: skip
    rows = []
    for kind, _, label in MODELS:
        keys = [f"metric-{kind}-s{s}" for s in seeds]
        aa = [r.summary(k).get("autoattack", {}).get("robust_accuracy") for k in keys]
        aa = [v for v in aa if v is not None]
        rows.append(
            [label, *ms([r.summary(k)["clean_accuracy"] for k in keys]),
             *ms([r.summary(k)["robust_accuracy"][f"{eps:.6g}"] for k in keys]),
             *(ms(aa) if aa else ["", ""]), *ms(sec[kind]), passes[kind]]
        )  # fmt: skip
    table = {
        "columns": ["model", "clean", "sd", f"robust eps {fmt_eps(eps)} (worst case)", "sd",
                    f"AutoAttack (first {paper.protocol(ctx).aa_n})", "sd", "s / epoch", "sd",
                    "passes per batch"],
        "rows": rows,
    }  # fmt: skip
    return paper.claim(
        ctx,
        "C3",
        "The Fisher regularizer gives higher robust accuracy than standard training (below or "
        "near adversarial training) at a lower cost per epoch than adversarial training.",
        "recon",
        comps,
        tables={"accuracy and cost": table},
        notes=f"Both adversarial objectives use the same inner maximization ({steps} steps); the "
        "cost comparison is measured wall time per epoch on this machine (shared with other "
        "work, so noisy) and the counted passes per batch are listed. The robust accuracy "
        "bootstrap is over test images; the cost's interval is over seeds only.",
    )
