"""Auto-PGD (Croce & Hein 2020): APGD-CE, APGD-DLR and the targeted APGD-T.

The step size starts at 2 eps and is halved at the checkpoints ``p_0 = 0, p_1 = 0.22,
p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` of the budget when the loss went up in at
most ``rho`` = 75% of the steps since the last checkpoint, or when neither the step size nor
the best loss changed since then (the reference implementation skips that second condition at
the first checkpoint, as here); a halving restarts from the best point. Steps use momentum
0.75: ``x_{k+1} = P(x_k + a (z_{k+1} - x_k) + (1 - a)(x_k - x_{k-1}))`` with
``z_{k+1} = P(x_k + eta grad-direction)``.

Speed: a point leaves the batch at its first misclassified iterate (``early_stop``; this is
exact for robust accuracy, since samples do not interact in eval mode); APGD-T runs all its
target classes in one batch and drops every row of a sample as soon as one target breaks it;
with CUDA, rows are compacted every few iterations so that the loop has no host syncs between.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from robustlab.attacks import precision as prec
from robustlab.attacks.base import Attack, register_attack, resolve_threat
from robustlab.attacks.core import Objective, make_objective
from robustlab.attacks.threat import L1, ThreatModel
from robustlab.errors import RobustlabError

__all__ = ["APGD", "APGDT", "APGDResult", "apgd", "apgd_checkpoints", "apgd_targeted"]


@dataclass
class APGDResult:
    """Per-row outcome of :func:`apgd`."""

    x_adv: Tensor  # the first misclassified iterate where ``broken``, else the best-loss iterate
    broken: Tensor  # bool (N,): misclassified at some iterate
    loss_best: Tensor  # (N,): the highest loss reached (before the row left the batch)


def apgd_checkpoints(steps: int) -> list[int]:
    """Iterations (1-based counts) after which APGD checks its step size."""
    k = max(int(0.22 * steps), 1)
    k_min, decr = max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    out, t = [], 0
    while t + k <= steps:
        t += k
        out.append(t)
        k = max(k - decr, k_min)
    return out


def _rows(mask: Tensor, like: Tensor) -> Tensor:
    return mask.reshape(-1, *([1] * (like.dim() - 1)))


@dataclass
class _State:
    """The rows still attacked, and APGD's per-row state for them (all tensors share the
    leading row dimension; ``t`` is None when untargeted)."""

    idx: Tensor  # rows of the original batch
    grp: Tensor  # group of each row (early stop drops whole groups)
    x0: Tensor  # clean inputs
    y: Tensor
    t: Tensor | None  # target labels
    xa: Tensor  # current iterate
    x_prev: Tensor  # previous iterate (momentum)
    grad: Tensor
    eta: Tensor  # step size (N, 1, ...)
    x_best: Tensor
    grad_best: Tensor
    loss_best: Tensor
    loss_prev: Tensor
    count: Tensor  # steps since the last checkpoint where the loss went up
    loss_last: Tensor  # best loss at the last checkpoint
    reduced_last: Tensor  # the step size was halved at the last checkpoint
    found: Tensor  # misclassified at some iterate
    x_found: Tensor  # the first misclassified iterate

    def keep(self, rows: Tensor) -> _State:
        """The state of the rows where ``rows`` is True."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v[rows] if v is not None else None
        return _State(**out)


class _Run:
    """One APGD run: the loss and its gradient, checkpoints, and the rows' outputs."""

    def __init__(
        self, model: nn.Module, x: Tensor, objective: Objective, eot_iter: int, early_stop: bool,
        bf16: bool = False,
    ) -> None:  # fmt: skip
        self.model, self.objective, self.eot_iter = model, objective, eot_iter
        self.early_stop, self.bf16 = early_stop, bf16
        n, dev = x.shape[0], x.device
        self.out = x.clone()
        self.broken = torch.zeros(n, dtype=torch.bool, device=dev)
        self.loss_out = torch.full((n,), float("-inf"), device=dev)

    def grad_loss(self, xa: Tensor, ya: Tensor, ta: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        g, bf16 = None, prec.bf16_pass(self.bf16, xa)
        for _ in range(self.eot_iter):
            xr = xa.detach().requires_grad_(True)
            with prec.passes(bf16, xa.device):
                logits = self.model(xr)
            lv = self.objective(prec.widened(logits), ya, ta)
            (gi,) = torch.autograd.grad(lv.sum(), xr)
            g = gi if g is None else g + gi
        assert g is not None
        wrong, lv = logits.detach().argmax(1) != ya, lv.detach().float()
        if bf16:  # bf16 claims and near-misses: float32 success test and loss
            rows, z = prec.float32_rows(self.model, xa, logits, ya)
            wrong[rows] = z.argmax(1) != ya[rows]
            lv[rows] = self.objective(z, ya[rows], None if ta is None else ta[rows]).to(lv.dtype)
        return g / self.eot_iter, lv, wrong

    def flush(self, st: _State, final: bool) -> _State:
        """Record found rows (and, at the end, all rows); drop finished groups."""
        idx, found = st.idx, st.found
        if final:
            self.out[idx] = torch.where(_rows(found, st.xa), st.x_found, st.x_best)
            self.broken[idx] = found
            self.loss_out[idx] = st.loss_best
            return st
        if not (self.early_stop and bool(found.any())):
            return st
        self.out[idx[found]] = st.x_found[found]
        self.broken[idx[found]] = True
        self.loss_out[idx] = st.loss_best
        done = torch.isin(st.grp, st.grp[found])
        # rows dropped with their group keep their best-loss point
        sib = done & ~found
        self.out[idx[sib]] = st.x_best[sib]
        return st.keep(~done)


def _start(
    run: _Run, x: Tensor, y: Tensor, threat: ThreatModel, y_target: Tensor | None,
    groups: Tensor | None, generator: torch.Generator | None, x_init: Tensor | None,
) -> _State:  # fmt: skip
    n, dev = x.shape[0], x.device
    xa = threat.random_start(x, generator) if x_init is None else threat.project(x_init.detach(), x)
    eps = threat.eps_like(x)
    grad, lv, wrong = run.grad_loss(xa, y, y_target)
    eta = (2.0 * eps).expand(n, *([1] * (x.dim() - 1))).clone()
    return _State(
        idx=torch.arange(n, device=dev),
        grp=groups.to(dev) if groups is not None else torch.arange(n, device=dev),
        x0=x, y=y, t=y_target, xa=xa, x_prev=xa.clone(), grad=grad, eta=eta,
        x_best=xa.clone(), grad_best=grad.clone(),
        loss_best=lv.clone(), loss_prev=lv.clone(), count=torch.zeros(n, device=dev),
        loss_last=lv.clone(), reduced_last=torch.ones(n, dtype=torch.bool, device=dev),
        found=wrong, x_found=xa.clone(),
    )  # fmt: skip


@torch.no_grad()
def _record(st: _State, x_new: Tensor, grad: Tensor, lv: Tensor, wrong: Tensor) -> None:
    """Book-keeping after one step: first hits, best points, the loss-increase count."""
    newly = wrong & ~st.found
    st.x_found = torch.where(_rows(newly, x_new), x_new, st.x_found)
    st.found = st.found | wrong
    st.count += (lv > st.loss_prev).float()
    st.loss_prev = lv
    better = lv > st.loss_best
    rb = _rows(better, x_new)
    st.x_best = torch.where(rb, x_new, st.x_best)
    st.grad_best = torch.where(rb, grad, st.grad_best)
    st.loss_best = torch.where(better, lv, st.loss_best)
    st.x_prev, st.xa, st.grad = st.xa, x_new, grad


@torch.no_grad()
def _checkpoint(st: _State, k: int, rho: float) -> None:
    """Halve the step size (restarting from the best point) where the loss oscillated or
    neither the step size nor the best loss changed since the last checkpoint."""
    osc = st.count <= k * rho
    no_impr = ~st.reduced_last & (st.loss_last >= st.loss_best)
    red = osc | no_impr
    st.reduced_last = red
    st.loss_last = st.loss_best.clone()
    rr = _rows(red, st.xa)
    st.eta = torch.where(rr, st.eta / 2.0, st.eta)
    st.xa = torch.where(rr, st.x_best, st.xa)
    st.grad = torch.where(rr, st.grad_best, st.grad)
    st.count = torch.zeros_like(st.count)


def apgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    steps: int = 100,
    loss: str = "ce",
    y_target: Tensor | None = None,
    eot_iter: int = 1,
    rho: float = 0.75,
    momentum: float = 0.75,
    generator: torch.Generator | None = None,
    groups: Tensor | None = None,
    early_stop: bool = True,
    x_init: Tensor | None = None,
    compact_every: int | None = None,
    precision: str = "float32",
) -> APGDResult:
    """One APGD run from a random start (or ``x_init``) on a batch; no mode switching.

    ``y_target`` switches to the targeted loss (``dlr`` -> targeted DLR). ``groups`` (N,) ties
    rows together: with ``early_stop`` all rows of a group leave the batch when one of them is
    misclassified (APGD-T uses it for the target classes of one sample). ``eot_iter`` averages
    the gradient over that many forward passes (expectation over transformation, for
    randomized models). ``precision`` (:mod:`robustlab.attacks.precision`): ``"bf16"`` runs
    the gradient passes under bf16 autocast; success and loss near the boundary are float32.
    """
    if isinstance(threat, L1):
        raise RobustlabError("APGD supports the linf and l2 threat models, not l1")
    if not isinstance(steps, int) or steps < 1:
        raise RobustlabError(f"steps must be a positive integer, got {steps!r}")
    if not isinstance(eot_iter, int) or eot_iter < 1:
        raise RobustlabError(f"eot_iter must be a positive integer, got {eot_iter!r}")
    objective = make_objective(loss, targeted=y_target is not None)
    x = x.detach()
    n, dev = x.shape[0], x.device
    if compact_every is None:
        compact_every = 4 if dev.type == "cuda" else 1
    checks = apgd_checkpoints(steps)
    k_sizes = {c: c - p for c, p in zip(checks, [0, *checks[:-1]], strict=True)}

    bf16 = prec.use_bf16(prec.check_precision(precision), x.device)
    run = _Run(model, x, objective, eot_iter, early_stop, bf16)
    st = run.flush(_start(run, x, y, threat, y_target, groups, generator, x_init), final=False)
    since_flush = 0
    for i in range(steps):
        if st.idx.numel() == 0:
            break
        ths = threat.subset(st.idx) if st.idx.numel() != n else threat
        with torch.no_grad():
            a = momentum if i > 0 else 1.0
            z = ths.project(ths.step(st.xa, st.grad, st.eta.reshape(-1)), st.x0)
            x_new = ths.project(st.xa + a * (z - st.xa) + (1.0 - a) * (st.xa - st.x_prev), st.x0)
        grad, lv, wrong = run.grad_loss(x_new, st.y, st.t)
        _record(st, x_new, grad, lv, wrong)
        if i + 1 in k_sizes:
            _checkpoint(st, k_sizes[i + 1], rho)
        since_flush += 1
        if since_flush >= compact_every:
            st = run.flush(st, final=False)
            since_flush = 0
    run.flush(st, final=True)
    return APGDResult(run.out, run.broken, run.loss_out)


def apgd_targeted(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    n_targets: int = 9,
    steps: int = 100,
    eot_iter: int = 1,
    rho: float = 0.75,
    generator: torch.Generator | None = None,
    target_batch: int | None = None,
    early_stop: bool = True,
    precision: str = "float32",
    order: Tensor | None = None,
) -> APGDResult:
    """APGD with the targeted DLR loss against the ``n_targets`` most likely other classes
    (``order``, (N, n) target classes in the order to try, replaces the logit order).

    Targets are run ``target_batch`` at a time (default: as many as fit in 128 rows on a CPU,
    4096 on a GPU); a sample leaves as soon as one target breaks it, and later target chunks
    only run on unbroken samples. With a ``generator``, target ``j``'s random starts come from
    a generator of their own (seeded from ``generator``), so the starts, and with them which
    samples break, do not depend on how the targets are batched (CPU and GPU defaults differ).
    """
    n = x.shape[0]
    with torch.no_grad():
        logits = model(x)
    k = logits.shape[1]
    if k < 4:
        raise RobustlabError(f"APGD-T needs at least 4 classes (targeted DLR), the model has {k}")
    n_targets = min(int(n_targets), k - 1 if order is None else order.shape[1])
    if n_targets < 1:
        raise RobustlabError("APGD-T needs at least one target class")
    if order is None:  # most likely wrong classes first
        order = logits.clone().scatter_(1, y[:, None], float("-inf")).argsort(1, descending=True)
    if target_batch is None:  # rows per call: CPUs slow down once activations leave the cache
        max_rows = 4096 if x.device.type == "cuda" else 128
        target_batch = max(1, max_rows // max(n, 1))
    tb = max(1, min(int(target_batch), n_targets))
    out = x.clone()
    broken = torch.zeros(n, dtype=torch.bool, device=x.device)
    loss_best = torch.full((n,), float("-inf"), device=x.device)
    starts = _TargetStarts(x, threat, generator)
    for j0 in range(0, n_targets, tb):
        todo = (~broken).nonzero().squeeze(1)
        if todo.numel() == 0:
            break
        nt = min(tb, n_targets - j0)
        rows_x = x[todo].repeat(nt, *([1] * (x.dim() - 1)))
        rows_y = y[todo].repeat(nt)
        rows_t = order[todo, j0 : j0 + nt].T.reshape(-1)
        grp = torch.arange(todo.numel(), device=x.device).repeat(nt)
        th = threat.subset(todo.repeat(nt))
        res = apgd(
            model,
            rows_x,
            rows_y,
            th,
            steps=steps,
            loss="dlr",
            y_target=rows_t,
            eot_iter=eot_iter,
            rho=rho,
            generator=generator,
            groups=grp,
            early_stop=early_stop,
            x_init=starts.rows(range(j0, j0 + nt), todo),
            precision=precision,
        )
        hit = res.broken.reshape(nt, -1)
        lb = res.loss_best.reshape(nt, -1)
        xs = res.x_adv.reshape(nt, todo.numel(), *x.shape[1:])
        # per sample: a breaking row if any, else the highest-loss row
        score = torch.where(hit, torch.full_like(lb, float("inf")), lb)
        pick = score.argmax(0)
        ar = torch.arange(todo.numel(), device=x.device)
        better = hit.any(0) | (lb[pick, ar] > loss_best[todo])
        out[todo[better]] = xs[pick, ar][better]
        loss_best[todo] = torch.maximum(loss_best[todo], lb.max(0).values)
        broken[todo] = hit.any(0)
    return APGDResult(out, broken, loss_best)


class _TargetStarts:
    """APGD-T's random starts: target ``j`` draws every sample's start from a generator seeded
    with ``base + j`` (``base`` drawn once from ``generator``), then keeps the rows it runs."""

    def __init__(self, x: Tensor, threat: ThreatModel, generator: torch.Generator | None) -> None:
        self.x, self.threat, g = x, threat, generator
        self.base = (
            None if g is None else int(torch.randint(2**62, (1,), generator=g, device=g.device))
        )

    def rows(self, targets: range, todo: Tensor) -> Tensor | None:
        if self.base is None:
            return None  # global RNG: APGD draws its own starts
        out = []
        for j in targets:
            g = torch.Generator(device=self.x.device).manual_seed(self.base + j)
            out.append(self.threat.random_start(self.x, g)[todo])
        return torch.cat(out)


class _APGDBase(Attack):
    def __init__(
        self,
        eps: float | str | Tensor | None,
        norm: str,
        threat: ThreatModel | None,
        steps: int,
        restarts: int,
        eot_iter: int,
        rho: float,
        seed: int | None,
        precision: str = "float32",
    ) -> None:
        super().__init__(resolve_threat(threat, eps, norm), seed)
        self.precision = prec.check_precision(precision)
        if isinstance(self.threat, L1):
            raise RobustlabError("APGD supports the linf and l2 threat models, not l1")
        for name, v in (("steps", steps), ("restarts", restarts), ("eot_iter", eot_iter)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise RobustlabError(f"{name} must be a positive integer, got {v!r}")
        if not (0.0 < rho <= 1.0 and math.isfinite(rho)):
            raise RobustlabError(f"rho must be in (0, 1], got {rho!r}")
        self.steps, self.restarts, self.eot_iter, self.rho = steps, restarts, eot_iter, rho

    def _single(
        self, model: nn.Module, x: Tensor, y: Tensor, th: ThreatModel, g: torch.Generator
    ) -> APGDResult:
        raise NotImplementedError

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        out = x.clone()
        broken = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        best = torch.full((x.shape[0],), float("-inf"), device=x.device)
        for _ in range(self.restarts):
            todo = (~broken).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            res = self._single(model, x[todo], y[todo], self.threat.subset(todo), generator)
            better = res.broken | (res.loss_best > best[todo])
            out[todo[better]] = res.x_adv[better]
            best[todo] = torch.maximum(best[todo], res.loss_best)
            broken[todo] = res.broken
        return out


@register_attack("apgd")
class APGD(_APGDBase):
    """Untargeted APGD (``apgd``; ``apgd-ce`` and ``apgd-dlr`` fix the loss)."""

    name = "apgd"

    def __init__(
        self,
        eps: float | str | Tensor | None = None,
        norm: str = "linf",
        threat: ThreatModel | None = None,
        steps: int = 100,
        loss: str = "ce",
        restarts: int = 1,
        eot_iter: int = 1,
        rho: float = 0.75,
        seed: int | None = 0,
        precision: str = "float32",
    ) -> None:
        super().__init__(eps, norm, threat, steps, restarts, eot_iter, rho, seed, precision)
        if loss not in ("ce", "dlr", "margin", "cw"):
            raise RobustlabError(f"unknown APGD loss {loss!r}; choose ce, dlr or margin")
        self.loss = loss

    def _single(
        self, model: nn.Module, x: Tensor, y: Tensor, th: ThreatModel, g: torch.Generator
    ) -> APGDResult:
        return apgd(model, x, y, th, self.steps, self.loss, None, self.eot_iter, self.rho, 0.75,
                    g, precision=self.precision)  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"APGD({self.threat!r}, loss={self.loss!r}, steps={self.steps}, "
            f"restarts={self.restarts}, eot_iter={self.eot_iter})"
        )


@register_attack("apgd-ce")
def _apgd_ce(**kw: object) -> APGD:
    kw.pop("loss", None)
    return APGD(loss="ce", **kw)  # type: ignore[arg-type]


@register_attack("apgd-dlr")
def _apgd_dlr(**kw: object) -> APGD:
    kw.pop("loss", None)
    return APGD(loss="dlr", **kw)  # type: ignore[arg-type]


@register_attack("apgd-t")
class APGDT(_APGDBase):
    """Targeted APGD with the targeted DLR loss over the ``n_targets`` most likely other
    classes (``apgd-t``); ``restarts`` restarts per target class, as in the reference."""

    name = "apgd-t"

    def __init__(
        self,
        eps: float | str | Tensor | None = None,
        norm: str = "linf",
        threat: ThreatModel | None = None,
        steps: int = 100,
        n_targets: int = 9,
        restarts: int = 1,
        eot_iter: int = 1,
        rho: float = 0.75,
        target_batch: int | None = None,
        seed: int | None = 0,
        loss: str = "dlr",
        targeted: bool = True,
        precision: str = "float32",
    ) -> None:
        super().__init__(eps, norm, threat, steps, restarts, eot_iter, rho, seed, precision)
        if loss != "dlr" or not targeted:
            raise RobustlabError("apgd-t is the targeted DLR attack; use apgd for other losses")
        if not isinstance(n_targets, int) or n_targets < 1:
            raise RobustlabError(f"n_targets must be a positive integer, got {n_targets!r}")
        self.n_targets, self.target_batch = n_targets, target_batch

    def _single(
        self, model: nn.Module, x: Tensor, y: Tensor, th: ThreatModel, g: torch.Generator
    ) -> APGDResult:
        kw = {"eot_iter": self.eot_iter, "rho": self.rho, "target_batch": self.target_batch,
              "precision": self.precision}  # fmt: skip
        return apgd_targeted(model, x, y, th, self.n_targets, self.steps, generator=g, **kw)

    def __repr__(self) -> str:
        return (
            f"APGDT({self.threat!r}, steps={self.steps}, n_targets={self.n_targets}, "
            f"restarts={self.restarts})"
        )
