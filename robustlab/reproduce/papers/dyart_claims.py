"""Claims D1-D4 of the `dyart` paper from the measurements of :mod:`dyart_data` and the protocol."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from robustlab.reproduce.claims import Claim, comparison, mean_diff
from robustlab.reproduce.engine import Results
from robustlab.reproduce.papers.common import fmt_eps, seed_stats
from robustlab.reproduce.papers.dyart import CHECKPOINTS, DyartPaper, key
from robustlab.reproduce.plan import PlanContext
from robustlab.reproduce.protocol import eps_label

__all__ = ["d1", "d2", "d3", "d4", "negative_below_eps"]


def negative_below_eps(margin: np.ndarray, speed: np.ndarray, eps: float) -> np.ndarray:
    """Per point: 1 where the speed is negative, 0 where positive, NaN unless the point has a
    finite margin below eps (correct, verified, vulnerable) and a finite speed."""
    small = np.isfinite(margin) & (margin < eps) & np.isfinite(speed)
    return np.where(small, (speed < 0).astype(np.float64), np.nan)


def _frac(v: np.ndarray) -> Any:
    return lambda idx: float(np.nanmean(v[idx])) if np.isfinite(v[idx]).any() else math.nan


def _ms(values: list[float]) -> list[float]:
    m, sd = seed_stats(values)
    return [round(m, 4), round(sd, 4)]


def _velocity_note(paper: DyartPaper, ctx: PlanContext) -> str:
    d = paper.settings(ctx)
    how = ("each batch's points moved by that same batch's velocity (exact batch)"
           if d.velocity == "exact" else f"every point moved by the velocity averaged over the "
           f"{d.n_batches} batches")  # fmt: skip
    return (
        f"Velocity -grad L of each objective on the live weights (no EMA) of the checkpoint, "
        f"{how}; {d.n_batches} seeded batches of {d.batch} training images per seed; margins "
        f"and closest boundary points by the verified FAB solver ({d.margin_steps} steps); "
        f"speed = <grad_theta phi(x^), theta'> / ‖grad_x phi(x^)‖_1 (Linf)."
    )


def _fractions(paper: DyartPaper, ctx: PlanContext, data: dict, ck: str, obj: str) -> list:
    eps = paper.budget(ctx).eps
    return [negative_below_eps(data[s][f"{ck}/margin"], data[s][f"{ck}/speed/{obj}"], eps)
            for s in ctx.seeds]  # fmt: skip


def d1(paper: DyartPaper, ctx: PlanContext, data: dict[int, dict[str, Any]]) -> Claim:
    d, eps = paper.settings(ctx), paper.budget(ctx).eps
    n, comps = d.n_batches * d.batch, []
    for ck, label in CHECKPOINTS:
        v = _fractions(paper, ctx, data, ck, "pgd_at")
        comps.append(
            comparison(
                f"{label} checkpoint: fraction of points with margin < eps whose boundary "
                f"approaches under PGD-AT − {d.substantial:g}",
                [lambda idx, v=x: _frac(v)(idx) - d.substantial for x in v],
                n,
                n_boot=500,
                details={"fraction": [float(np.nanmean(x)) for x in v],
                         "points_below_eps": [int(np.isfinite(x).sum()) for x in v]},
            )
        )  # fmt: skip
    return paper.claim(
        ctx, "D1",
        "Conflicting dynamics under AT: from a natural burn-in and from a partly robust "
        "checkpoint, a PGD-AT update moves the boundary towards a substantial fraction "
        f"(here: more than {d.substantial:g}) of the points with margin below eps "
        f"({fmt_eps(eps)}).",
        "paper", comps, n, notes=_velocity_note(paper, ctx),
    )  # fmt: skip


def d2(paper: DyartPaper, ctx: PlanContext, data: dict[int, dict[str, Any]]) -> Claim:
    d = paper.settings(ctx)
    n, comps, rows = d.n_batches * d.batch, [], []
    for ck, label in CHECKPOINTS:
        at = _fractions(paper, ctx, data, ck, "pgd_at")
        dy = _fractions(paper, ctx, data, ck, "dyart")
        comps.append(
            comparison(
                f"{label} checkpoint: fraction approaching (margin < eps), PGD-AT − DyART",
                [lambda idx, a=a, b=b: _frac(a)(idx) - _frac(b)(idx)
                 for a, b in zip(at, dy, strict=True)],
                n,
                n_boot=500,
                details={"PGD-AT": [float(np.nanmean(a)) for a in at],
                         "DyART": [float(np.nanmean(b)) for b in dy]},
            )
        )  # fmt: skip
        kept = [_kept_below_eps(paper, ctx, data[s], ck) for s in ctx.seeds]
        rows.append([label, *_ms([float(np.isfinite(a).sum()) for a in at]),
                     *_ms([float(np.nanmean(a)) for a in at]),
                     *_ms([float(np.nanmean(b)) for b in dy]), *_ms(kept)])  # fmt: skip
    table = {"columns": ["checkpoint", "points below eps", "sd", "PGD-AT approaching", "sd",
                         "DyART approaching", "sd", "below eps kept by DyART", "sd"],
             "rows": rows}  # fmt: skip
    return paper.claim(
        ctx, "D2",
        "DyART reduces the fraction of small-margin points the boundary approaches compared to "
        "PGD-AT, from the same checkpoints with the velocity measured on the same batches.",
        "paper", comps, n, notes=_velocity_note(paper, ctx),
        tables={"negative speeds among points with margin below eps": table},
    )  # fmt: skip


def _kept_below_eps(paper: DyartPaper, ctx: PlanContext, d: dict, ck: str) -> float:
    """Fraction of the points with margin below eps on which DyART's margin term acts."""
    eps = paper.budget(ctx).eps
    r, kept = d[f"{ck}/margin"], d.get(f"{ck}/kept/dyart")
    small = np.isfinite(r) & (r < eps)
    if kept is None or not small.any():
        return math.nan
    return float(kept[small].mean())


def d3(paper: DyartPaper, ctx: PlanContext, r: Results, data: dict[int, dict[str, Any]]) -> Claim:
    b, seeds, comps = paper.budget(ctx), ctx.seeds, []
    for eps in paper.eps_values(ctx):
        at = [r.arrays(key("at", s))[f"robust_correct@{eps_label(eps)}"] for s in seeds]
        dy = [r.arrays(key("dyart", s))[f"robust_correct@{eps_label(eps)}"] for s in seeds]
        comps.append(comparison(
            f"robust accuracy at eps {fmt_eps(eps)} (worst of PGD-CE and PGD-margin): "
            "DyART − PGD-AT",
            [mean_diff(x, y) for x, y in zip(dy, at, strict=True)], paper.n_test(ctx),
        ))  # fmt: skip
    aa_n = paper.aa_n(ctx)
    if aa_n > 0:
        at = [r.arrays(key("at", s))["aa_correct"] for s in seeds]
        dy = [r.arrays(key("dyart", s))["aa_correct"] for s in seeds]
        comps.append(comparison(
            f"AutoAttack (standard) at eps {fmt_eps(b.eps)} on the first {aa_n}: "
            "DyART − PGD-AT",
            [mean_diff(x, y) for x, y in zip(dy, at, strict=True)], aa_n,
        ))  # fmt: skip
    rows = []
    for kind, label in (("burnin", "burn-in"), ("at", "PGD-AT"), ("dyart", "DyART")):
        keys = [key(kind, s) for s in seeds]
        sm = [r.summary(k) for k in keys]
        runs = [r.run_summary(k) for k in keys]
        aa = [x["autoattack"]["robust_accuracy"] for x in sm if "autoattack" in x]
        rows.append([label, *_ms([x["clean_accuracy"] for x in sm]),
                     *[_ms([x["robust_accuracy"][eps_label(e)] for x in sm])[0]
                       for e in paper.eps_values(ctx)],
                     *(_ms(aa) if aa else ["", ""]),
                     *_ms([x["time_s"] / x["epochs"] for x in runs])])  # fmt: skip
    table = {"columns": ["model", "clean", "sd",
                         *[f"eps {fmt_eps(e)}" for e in paper.eps_values(ctx)],
                         f"AutoAttack (first {aa_n})", "sd", "s / epoch", "sd"],
             "rows": rows}  # fmt: skip
    d = paper.settings(ctx)
    return paper.claim(
        ctx, "D3",
        "DyART trained from the shared burn-in reaches higher robust accuracy than PGD-AT "
        "across eps (0.5x to 2x the training eps) at a matched training budget, under the "
        "worst-case protocol and AutoAttack at the main eps.",
        "paper", comps, paper.n_test(ctx), tables={"accuracy per eps (seed means)": table},
        notes=f"Matched budget: the same {d.epochs} epochs, optimizer and schedule from the same "
        f"burn-in ({d.burnin_epochs} natural epochs); DyART costs more per epoch (s / epoch "
        f"column). DyART: lam {d.lam:g}, alpha {d.alpha:g}, r0 {d.r0_factor:g} eps, "
        f"{d.fab_steps} FAB steps.",
    )  # fmt: skip


def _safe_agreement(closed: np.ndarray, fd: np.ndarray) -> dict[str, float]:
    """:func:`speed_agreement`, NaN (a failing value) when under 3 pairs are finite."""
    from robustlab.analysis.batch_dynamics import speed_agreement

    return speed_agreement(closed, fd, strict=False)


def _agreement(closed: np.ndarray, fd: np.ndarray, what: str) -> Any:
    def stat(idx: np.ndarray) -> float:
        a = _safe_agreement(closed[idx], fd[idx])
        return a["pearson"] - 0.9 if what == "pearson" else 0.1 - a["median_rel_error"]

    return stat


def d4(paper: DyartPaper, ctx: PlanContext, data: dict[int, dict[str, Any]]) -> Claim:
    d, seeds, comps = paper.settings(ctx), ctx.seeds, []
    f = [data[s]["d4/finite_difference"] for s in seeds]
    for field, name in (
        ("closed", "paper's formula (dual norm of grad_x phi)"),
        ("closed_box", "box-aware formula (free coordinates only)"),
    ):
        c = [data[s][f"d4/{field}"] for s in seeds]
        full = [_safe_agreement(x, y) for x, y in zip(c, f, strict=True)]
        details = {
            k: [a[k] for a in full] for k in ("pearson", "spearman", "median_rel_error", "n")
        }
        comps += [
            comparison(f"{name}: Pearson correlation with the finite difference − 0.9",
                       [_agreement(x, y, "pearson") for x, y in zip(c, f, strict=True)],
                       d.d4_n, n_boot=300, details=details),
            comparison(f"{name}: 0.1 − median relative error (fd − closed) / fd in absolute value",
                       [_agreement(x, y, "rel") for x, y in zip(c, f, strict=True)], d.d4_n,
                       n_boot=300, details=details),
        ]  # fmt: skip
    return paper.claim(
        ctx, "D4",
        "The closed-form boundary speed agrees with the finite difference of verified margins "
        "after one real SGD step (correlation above 0.9, median relative error below 10%).",
        "paper", comps, d.d4_n,
        notes=f"At the burn-in checkpoint (live weights, as a float64 copy), PGD-AT loss on one "
        f"training batch, one torch.optim.SGD step of lr {d.d4_lr:g}; margins of the first "
        f"{d.d4_n} test images before and after by the FAB solver ({2 * d.margin_steps} steps); "
        "points correct and verified both times. Two closed forms: the paper's (ignores the "
        "[0, 1] box) and robustlab's box-aware one (only unclipped coordinates of x^ can move); "
        "both are checked, the claim holds only if both agree.",
    )  # fmt: skip
