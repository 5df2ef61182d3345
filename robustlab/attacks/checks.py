"""Gradient-masking sanity checks: signs that a robustness number is not to be trusted.

Each check returns a :class:`CheckResult` (name, passed, message, numbers); a failed check is
a warning to report, with its numbers. The checks (after Carlini et al. 2019 and Croce & Hein
2020): outputs that are probabilities rather than logits; outputs that change between two
identical forward passes; a large fraction of inputs with an all-zero loss gradient; robust
accuracy not decreasing in eps; not reaching about 0 at a very large eps; a stronger attack
(more steps and restarts) doing worse than a weaker one; the black-box Square attack breaking
points that the white-box attacks before it could not. :func:`run_sanity_checks` runs the
cheap default set on a subset of points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.attacks.base import attack_mode, check_inputs
from robustlab.attacks.pgd import pgd
from robustlab.attacks.threat import make_threat
from robustlab.errors import RobustlabError

__all__ = [
    "CheckResult",
    "check_probabilities",
    "check_determinism",
    "check_zero_gradients",
    "check_eps_monotonic",
    "check_large_eps",
    "check_stronger_attack",
    "check_square_vs_whitebox",
    "run_sanity_checks",
    "large_eps",
]


@dataclass
class CheckResult:
    """One sanity check: ``passed`` False means a warning."""

    name: str
    passed: bool
    message: str
    numbers: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "message": self.message,
            "numbers": self.numbers,
        }

    def __str__(self) -> str:
        tag = "ok" if self.passed else "WARNING"
        return f"[{tag}] {self.name}: {self.message}"


def _robust_acc(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def check_probabilities(model: nn.Module, x: Tensor, atol: float = 1e-4) -> CheckResult:
    """Warn when every output row is non-negative and sums to 1 (softmax instead of logits)."""
    with attack_mode(model), torch.no_grad():
        out = model(x)
    sums = out.sum(1)
    nonneg = bool((out >= 0).all())
    max_dev = float((sums - 1).abs().max())
    probs = nonneg and max_dev <= atol
    msg = (
        "the model returns probabilities (rows are non-negative and sum to 1): attacks need "
        "logits, cross-entropy on probabilities has vanishing gradients"
        if probs
        else "outputs look like logits"
    )
    return CheckResult(
        "probability-outputs",
        not probs,
        msg,
        {"min_output": float(out.min()), "max_row_sum_deviation": max_dev},
    )


def check_determinism(model: nn.Module, x: Tensor, rtol: float = 1e-5) -> CheckResult:
    """Warn when two identical forward passes (eval mode) give different outputs."""
    with attack_mode(model), torch.no_grad():
        a, b = model(x), model(x)
    diff = float((a - b).abs().max())
    scale = max(1.0, float(a.abs().max()))
    same = diff <= rtol * scale
    flips = float((a.argmax(1) != b.argmax(1)).float().mean())
    msg = (
        "outputs are deterministic"
        if same
        else f"outputs change between identical forward passes (max difference {diff:.3g}, "
        f"{100 * flips:.1f}% of predictions flip): a randomized model needs EOT attacks "
        "(AutoAttack version 'rand')"
    )
    return CheckResult(
        "nondeterministic-outputs", same, msg, {"max_abs_difference": diff, "flip_rate": flips}
    )


def check_zero_gradients(
    model: nn.Module, x: Tensor, y: Tensor, threshold: float = 0.05
) -> CheckResult:
    """Warn when more than ``threshold`` of the inputs have an all-zero cross-entropy gradient."""
    with attack_mode(model):
        xr = x.detach().clone().requires_grad_(True)
        loss = F.cross_entropy(model(xr), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, xr)
    zero = (g.reshape(g.shape[0], -1).abs().amax(1) == 0).float()
    frac = float(zero.mean())
    elem = float((g == 0).float().mean())
    ok = frac <= threshold
    msg = (
        f"{100 * frac:.1f}% of inputs have an all-zero loss gradient"
        if ok
        else f"{100 * frac:.1f}% of inputs have an all-zero loss gradient (threshold "
        f"{100 * threshold:.0f}%): gradient masking or saturated outputs; gradient attacks "
        "cannot move these points"
    )
    return CheckResult(
        "zero-gradients",
        ok,
        msg,
        {"zero_gradient_fraction": frac, "zero_gradient_entries": elem, "n": int(x.shape[0])},
    )


def check_eps_monotonic(
    eps_values: Sequence[float], accuracies: Sequence[float], tol: float = 0.01
) -> CheckResult:
    """Warn when robust accuracy goes up (by more than ``tol``) as eps grows."""
    pairs = sorted(zip(eps_values, accuracies, strict=True))
    bad = [
        (e0, a0, e1, a1)
        for (e0, a0), (e1, a1) in zip(pairs, pairs[1:], strict=False)
        if a1 > a0 + tol
    ]
    numbers = {"eps": [p[0] for p in pairs], "robust_accuracy": [p[1] for p in pairs]}
    if not bad:
        return CheckResult("eps-monotonic", True, "robust accuracy decreases with eps", numbers)
    e0, a0, e1, a1 = bad[0]
    return CheckResult(
        "eps-monotonic",
        False,
        f"robust accuracy rises from {100 * a0:.1f}% at eps {e0:.4g} to {100 * a1:.1f}% at "
        f"eps {e1:.4g}: a larger ball cannot be safer; the attack is failing",
        numbers,
    )


def large_eps(norm: str, x: Tensor) -> float:
    """An eps whose ball covers the whole [0, 1] box: 1 (Linf), sqrt(d) (L2), d (L1)."""
    d = x[0].numel()
    th = make_threat(norm, 1.0)
    return {"linf": 1.0, "l2": math.sqrt(d), "l1": float(d)}[th.name]


def check_large_eps(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    norm: str = "linf",
    steps: int = 20,
    threshold: float = 0.05,
    seed: int = 0,
) -> CheckResult:
    """Warn when PGD at an eps covering the whole box leaves more than ``threshold`` robust."""
    eps = large_eps(norm, x)
    th = make_threat(norm, eps)
    g = torch.Generator(device=x.device).manual_seed(seed)
    with attack_mode(model):
        x_adv = pgd(model, x, y, th, steps=steps, early_stop=True, generator=g)
        acc = _robust_acc(model, x_adv, y)
    ok = acc <= threshold
    msg = (
        f"robust accuracy {100 * acc:.1f}% at eps {eps:.4g} (the whole box)"
        if ok
        else f"robust accuracy is still {100 * acc:.1f}% at eps {eps:.4g}, where the ball covers "
        "the whole input box and any image is reachable: the attack's gradients are useless"
    )
    return CheckResult("large-eps", ok, msg, {"eps": eps, "robust_accuracy": acc, "steps": steps})


def check_stronger_attack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    norm: str = "linf",
    steps: int = 10,
    factor: int = 4,
    restarts: int = 2,
    seed: int = 0,
) -> CheckResult:
    """Warn when PGD with ``factor`` x more steps and ``restarts`` restarts does worse than
    the plain ``steps``-step PGD (by more than two points or 2%)."""
    th = make_threat(norm, eps)
    g = torch.Generator(device=x.device)
    with attack_mode(model):
        g.manual_seed(seed)
        weak = _robust_acc(
            model, pgd(model, x, y, th, steps=steps, early_stop=True, generator=g), y
        )
        g.manual_seed(seed)
        strong_adv = pgd(
            model, x, y, th, steps=steps * factor, restarts=restarts, early_stop=True, generator=g
        )
        strong = _robust_acc(model, strong_adv, y)
    tol = max(2.0 / max(x.shape[0], 1), 0.02)
    ok = strong <= weak + tol
    numbers = {
        "weak_steps": steps,
        "weak_robust_accuracy": weak,
        "strong_steps": steps * factor,
        "strong_restarts": restarts,
        "strong_robust_accuracy": strong,
    }
    msg = (
        f"PGD-{steps * factor} x{restarts} ({100 * strong:.1f}%) <= PGD-{steps} ({100 * weak:.1f}%)"
        if ok
        else f"a stronger attack does worse: PGD-{steps * factor} with {restarts} restarts leaves "
        f"{100 * strong:.1f}% robust, PGD-{steps} only {100 * weak:.1f}%: the loss surface is "
        "masked or noisy"
    )
    return CheckResult("stronger-attack-worse", ok, msg, numbers)


def check_square_vs_whitebox(
    per_attack: Sequence[dict[str, Any]], n: int, alpha: float = 0.002
) -> CheckResult | None:
    """From an ensemble's per-attack breakdown: warn when Square (black-box) broke more than
    ``alpha`` of all points after the white-box attacks had their turn. None without Square."""
    idx = next((i for i, p in enumerate(per_attack) if str(p["attack"]).startswith("square")), None)
    if idx is None or idx == 0 or n == 0:
        return None
    broken = int(per_attack[idx]["broken"])
    frac = broken / n
    ok = frac <= alpha
    white = [str(p["attack"]) for p in per_attack[:idx]]
    msg = (
        f"Square broke {broken} point(s) ({100 * frac:.2f}%) that {white} left"
        if ok
        else f"the black-box Square attack broke {broken} points ({100 * frac:.2f}% of all) that "
        f"the white-box attacks {white} could not: gradients are misleading (masking)"
    )
    return CheckResult(
        "black-box-beats-white-box", ok, msg, {"square_broken": broken, "fraction": frac}
    )


def run_sanity_checks(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    norm: str = "linf",
    n_points: int = 64,
    per_attack: Sequence[dict[str, Any]] | None = None,
    n_total: int | None = None,
    sweep: tuple[Sequence[float], Sequence[float]] | None = None,
    seed: int = 0,
) -> list[CheckResult]:
    """The cheap default checks on the first ``n_points`` inputs (a few PGD runs of 10-40
    steps). ``per_attack``/``n_total`` (an ensemble's breakdown) adds the Square check;
    ``sweep`` = (eps values, robust accuracies) replaces the built-in small eps sweep."""
    check_inputs(x, y)
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise RobustlabError(f"sanity checks need a positive eps, got {eps!r}")
    xs, ys = x[:n_points].detach(), y[:n_points].to(x.device).long()
    results = [
        check_probabilities(model, xs),
        check_determinism(model, xs),
        check_zero_gradients(model, xs, ys),
    ]
    if sweep is None:
        th_eps = [eps / 4, eps / 2, eps, 2 * eps]
        g = torch.Generator(device=x.device)
        accs = []
        with attack_mode(model):
            for e in th_eps:
                g.manual_seed(seed)
                adv = pgd(
                    model, xs, ys, make_threat(norm, e), steps=10, early_stop=True, generator=g
                )
                accs.append(_robust_acc(model, adv, ys))
        sweep = (th_eps, accs)
    results.append(check_eps_monotonic(*sweep))
    results.append(check_large_eps(model, xs, ys, norm, seed=seed))
    results.append(check_stronger_attack(model, xs, ys, eps, norm, seed=seed))
    if per_attack is not None:
        sq = check_square_vs_whitebox(per_attack, n_total or x.shape[0])
        if sq is not None:
            results.append(sq)
    return results
