"""Square Attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020): a score-based black-box
attack by random square-shaped updates, for the Linf and L2 threat models.

One job: the ``square`` attack. It only queries logits (no gradients): random search on the
margin loss ``z_y - max_{k != y} z_k``, accepting a candidate when it lowers the margin, with the
square side shrinking on the published schedule of ``p`` (the fraction of pixels changed): by
default the breakpoints are rescaled to the query budget (the standalone reference default);
inside AutoAttack, as the reference (a392200) builds it with ``resc_schedule=False``, they are
taken in raw iterations, so with 5000 queries ``p`` stops halving after iteration 4000.
Each sample draws its own square position and values; only points still classified correctly
are queried. Samples misclassified on clean inputs are returned unchanged. On a GPU the
float32 Linf loop is masked and replayed from CUDA graphs (``attacks/square_graphs.py``): a
point that is done stays in the batch, unchanged, until the next block of queries.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from robustlab.attacks.base import Attack, check_labels, register_attack, resolve_threat
from robustlab.attacks.boundary import hard_margin
from robustlab.attacks.graphs import GraphedForward
from robustlab.attacks.precision import (
    bf16_native,
    bf16_pass,
    check_precision,
    float32_rows,
    passes,
    use_bf16,
)
from robustlab.attacks.square_graphs import (
    dense,
    flat_view,
    linf_bounds,
    run_linf_masked,
    square_index,
)
from robustlab.attacks.threat import ThreatModel
from robustlab.errors import RobustlabError

__all__ = ["Square", "bf16_native", "p_schedule", "pseudo_gaussian_pattern"]


Forward = Callable[[Tensor], Tensor]  # the model, or its GraphedForward

# Published schedule: p halves at these fractions (in 1/10000 of the query budget).
_P_BOUNDS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_schedule(p_init: float, it: int, n_queries: int, rescale: bool = True) -> float:
    """Fraction of pixels changed at update ``it`` (0 = the first update after the
    initialisation): ``p_init / 2**k`` where ``k`` counts the breakpoints (10, 50, 200, 500,
    1000, 2000, 4000, 6000, 8000) that ``it`` has passed.

    ``rescale`` (the reference's ``resc_schedule``): ``it`` is first mapped to a 10000-query
    budget (``int(it / n_queries * 10000)``), so the schedule spans any ``n_queries``. Without
    it the breakpoints count raw iterations, as AutoAttack runs Square: with 5000 queries the
    last halving is at iteration 4000 and ``p`` is twice the rescaled one from iteration 6 on.
    """
    scaled = int(it / n_queries * 10000) if rescale else int(it)
    if rescale and scaled > 10000:
        return p_init
    k = sum(1 for b in _P_BOUNDS if scaled > b)
    return p_init / 2**k


def _rectangle_bump(a: int, b: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(a, b) bump: concentric rectangles around the centre with weight ``1/(k+1)^2`` summed
    from each cell's Chebyshev ring ``k`` outwards; unit L2 norm."""
    i = torch.arange(a, device=device)[:, None]
    j = torch.arange(b, device=device)[None, :]
    ring = torch.maximum((i - a // 2).abs(), (j - b // 2).abs())
    n_rings = max(a // 2 + 1, b // 2 + 1)
    w = 1.0 / torch.arange(1, n_rings + 1, device=device, dtype=dtype) ** 2
    tail = w.flip(0).cumsum(0).flip(0)  # tail[k] = sum_{r >= k} w[r]
    out = tail[ring]
    return out / out.pow(2).sum().sqrt()


def pseudo_gaussian_pattern(s: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """The L2 Square Attack's (s, s) update pattern: a positive bump on the first half of the
    rows and a negative one on the second, unit L2 norm."""
    top = _rectangle_bump(s // 2, s, device, dtype) if s >= 2 else torch.zeros(0, s)
    bottom = -_rectangle_bump(s - s // 2, s, device, dtype)
    out = torch.cat([top.to(device=device, dtype=dtype), bottom], 0)
    return out / out.pow(2).sum().sqrt()


def _windows(
    n: int, h: int, w: int, s: int, gen: torch.Generator, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Per-sample row and column indices (n, s) of a random s x s square inside (h, w)."""
    vh = torch.randint(0, h - s + 1, (n,), generator=gen, device=device)
    vw = torch.randint(0, w - s + 1, (n,), generator=gen, device=device)
    ar = torch.arange(s, device=device)
    return vh[:, None] + ar, vw[:, None] + ar


def _coins(shape: tuple[int, ...], gen: torch.Generator, device: torch.device) -> Tensor:
    """Fair boolean coins: the draws of :func:`_signs` (``True`` where it gives +1)."""
    return torch.randint(0, 2, shape, generator=gen, device=device, dtype=torch.bool)


@dataclass
class _Active:
    """The points Square still queries, compacted: every query works on these tensors whole
    (no gather from and scatter into the full batch); ``pos`` are their rows in the batch.
    ``lo`` / ``hi``: ``clamp(x -+ eps)``, the two values a Linf square can take."""

    pos: Tensor
    x: Tensor
    y: Tensor
    eps: Tensor
    best: Tensor
    m: Tensor
    lo: Tensor | None
    hi: Tensor | None
    limit: Tensor | None  # per-point query budgets, or None (n_queries for all)

    @classmethod
    def start(
        cls,
        x: Tensor,
        y: Tensor,
        eps: Tensor,
        best: Tensor,
        m: Tensor,
        linf: bool,
        limit: Tensor | None,
    ) -> _Active:
        lo, hi = linf_bounds(x, eps) if linf else (None, None)
        pos = torch.arange(x.shape[0], device=x.device)
        act = cls(pos, x, y, eps, best.clone(), m, lo, hi, limit)
        live = (m > 0) if limit is None else (m > 0) & (limit > 1)
        return act if bool(live.all()) else act.keep(live.nonzero().squeeze(1))

    def keep(self, k: Tensor) -> _Active:
        """The active set restricted to its rows ``k``."""
        parts = (getattr(self, f.name) for f in fields(self))
        return _Active(*(None if t is None else t[k] for t in parts))

    def __post_init__(self) -> None:
        # the Linf step reads and writes best, lo and hi through (n, c, h*w) views (flat_view)
        self.best = dense(self.best)
        self.lo = None if self.lo is None else dense(self.lo)
        self.hi = None if self.hi is None else dense(self.hi)


@dataclass
class _Patch:
    """A Linf candidate's change from the best point: positions ``idx`` (n, c, s*s) in the
    flattened image, and the square's ``new`` and ``old`` values there."""

    idx: Tensor
    new: Tensor
    old: Tensor

    def accept(self, best: Tensor, better: Tensor) -> None:
        """Make ``best`` the candidate in the rows where ``better`` (bool, n), in place: the
        candidate is ``best`` with its square replaced, so only the square is written."""
        new = torch.where(better[:, None, None], self.new, self.old)
        flat_view(best).scatter_(2, self.idx, new)


def _get(t: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """The per-sample squares of ``t`` (n, c, h, w) -> (n, c, s, s)."""
    ni = torch.arange(t.shape[0], device=t.device)[:, None, None]
    return t[ni, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def _put(t: Tensor, rows: Tensor, cols: Tensor, v: Tensor | float) -> None:
    """Write ``v`` (n, c, s, s) (or a number) into the per-sample squares of ``t``, in place."""
    ni = torch.arange(t.shape[0], device=t.device)[:, None, None]
    if isinstance(v, Tensor):
        v = v.permute(0, 2, 3, 1)
    t[ni, :, rows[:, :, None], cols[:, None, :]] = v


def _linf_side(p: float, h: int, w: int) -> int:
    """The side of a Linf square covering a fraction ``p`` of an (h, w) image: at least 1, at
    most ``min(h, w) - 1``."""
    return min(max(int(round(math.sqrt(p * h * w))), 1), min(h, w) - 1)


def _signs(shape: tuple[int, ...], gen: torch.Generator, like: Tensor) -> Tensor:
    r = torch.randint(0, 2, shape, generator=gen, device=like.device)
    return (2 * r - 1).to(like.dtype)


def _l2_norm(t: Tensor) -> Tensor:
    return t.flatten(1).norm(dim=1)


@register_attack("square")
class Square(Attack):
    """Square Attack, untargeted, margin loss, Linf or L2.

    Args:
        eps, norm / threat: the threat model (an eps and a norm name, or a ThreatModel).
        n_queries: query budget per sample, the initialisation included (AutoAttack standard:
            5000).
        p_init: initial fraction of pixels changed (AutoAttack: 0.8), shrunk by
            :func:`p_schedule`.
        rescale_schedule: map the schedule's breakpoints to ``n_queries`` (True, the
            reference's standalone default) or count raw iterations (False: what AutoAttack
            uses, ``resc_schedule=False`` in the reference).
        precision: ``"float32"``; ``"bf16"`` runs the queries under bf16 autocast (on a CPU,
            batches of at least 8 rows) and re-evaluates in float32 every query that crossed
            the boundary or is within bf16 rounding of it, so that successes and the close
            comparisons are float32's (:mod:`robustlab.attacks.precision`); ``"auto"``: bf16
            where the CPU or GPU has native bf16, else float32.
        cuda_graphs: on a GPU, replay queries from CUDA graphs: in float32 Linf, each whole
            step, the model's pass included, from masked rows without host synchronisation
            (:mod:`robustlab.attacks.square_graphs`: as strong, other random draws); otherwise
            the model's query passes of at most 64 rows (:mod:`robustlab.attacks.graphs`: the
            same computation per row, launched at once instead of kernel by kernel). No effect
            on a CPU.
        seed: all random choices.
    """

    name = "square"

    def __init__(
        self,
        eps: float | str | Tensor | None = None,
        norm: str = "linf",
        threat: ThreatModel | None = None,
        *,
        n_queries: int = 5000,
        p_init: float = 0.8,
        rescale_schedule: bool = True,
        seed: int | None = 0,
        precision: str = "float32",
        cuda_graphs: bool = True,
    ) -> None:
        threat = resolve_threat(threat, eps, norm)
        if threat.name not in ("linf", "l2"):
            raise RobustlabError(f"square supports the linf and l2 norms, not {threat.name}")
        if int(n_queries) != n_queries or n_queries < 1:
            raise RobustlabError(f"n_queries must be a positive integer, got {n_queries!r}")
        if not 0.0 < p_init <= 1.0:
            raise RobustlabError(f"p_init must be in (0, 1], got {p_init!r}")
        check_precision(precision)
        super().__init__(threat, seed)
        self.n_queries, self.p_init = int(n_queries), float(p_init)
        self.rescale_schedule = bool(rescale_schedule)
        self.precision = precision
        self.cuda_graphs = bool(cuda_graphs)
        self.queries: Tensor | None = None  # per-sample queries used by the last call
        self._budgets: Tensor | None = None  # per-sample query budgets (attack_with_budgets)
        # the last call's whole-step graphs (captures, replays, failed), or None if not used
        self.graph_stats: dict[str, object] | None = None

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        if x.dim() != 4:
            raise RobustlabError(f"square needs images (N, C, H, W), got shape {tuple(x.shape)}")
        if min(x.shape[2], x.shape[3]) < 2:
            raise RobustlabError("square needs images at least 2 pixels high and wide")
        self._bf16 = use_bf16(self.precision, x.device)
        # whole steps are replayed by the masked loop itself; elsewhere (bf16, L2) single passes,
        # one graph cache per call: graphs hold the weights' memory as it was when recorded
        fwd = model if self._whole_steps(x.device) else GraphedForward(model, self.cuda_graphs)
        with torch.inference_mode():  # cheaper per query than no_grad; 5000 queries add up
            x_adv, queries = self._run(fwd, x, y, generator)
        self.queries = queries.clone()
        return x_adv.clone()  # a normal tensor again, usable by autograd downstream

    def attack_with_budgets(
        self, model: nn.Module, x: Tensor, y: Tensor, budgets: Tensor
    ) -> Tensor:
        """``self(model, x, y)`` with at most ``budgets[i]`` queries (an integer in
        ``1 .. n_queries``, the initialisation included) for point ``i``; the schedule of ``p``
        is the unbudgeted one, so a point's run is a truncated ``n_queries`` run."""
        b = torch.as_tensor(budgets)
        if b.shape != (x.shape[0],) or b.is_floating_point() or b.is_complex():
            raise RobustlabError(
                f"budgets must be {x.shape[0]} integers, got {b.dtype} {tuple(b.shape)}"
            )
        if b.numel() and (int(b.min()) < 1 or int(b.max()) > self.n_queries):
            raise RobustlabError(f"budgets must be in 1..{self.n_queries} (n_queries)")
        self._budgets = b.long()
        try:
            return self(model, x, y)
        finally:
            self._budgets = None

    def _run(
        self, model: Forward, x: Tensor, y: Tensor, gen: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        n = x.shape[0]
        logits = model(x)
        check_labels(y, logits.shape[1])
        eps_all = torch.as_tensor(self.threat.eps, dtype=x.dtype, device=x.device).flatten()
        eps_all = eps_all.expand(n) if eps_all.numel() == 1 else eps_all
        x_adv = x.clone()
        queries = torch.zeros(n, dtype=torch.long, device=x.device)
        todo = (hard_margin(logits, y) > 0).nonzero().squeeze(1)  # attack correct points only
        if todo.numel() == 0:
            return x_adv, queries
        xs, ys, eps = x[todo], y[todo], eps_all[todo]
        linf = self.threat.name == "linf"
        x_best = self._init_linf(xs, eps, gen) if linf else self._init_l2(xs, eps, gen)
        m_best = self._margin(model, x_best, ys)
        q = torch.ones(xs.shape[0], dtype=torch.long, device=x.device)
        budget = None if self._budgets is None else self._budgets.to(x.device)[todo]
        top = self.n_queries if budget is None else int(budget.max())
        # Every Linf value in a square and in the best point is exactly clamp(x -+ eps), so
        # for eps >= 1e-5 "the square would not change" (|difference| < 1e-7) is equality.
        self._exact_same = linf and bool(eps.min() >= 1e-5)
        self.graph_stats = None
        if self._whole_steps(x.device):
            x_adv[todo], queries[todo] = self._masked(model, xs, ys, eps, x_best, m_best, budget,
                                                      top, gen)  # fmt: skip
            return x_adv, queries
        act = _Active.start(xs, ys, eps, x_best, m_best, linf, budget)
        stops = set() if budget is None else set(budget.unique().tolist())
        for it in range(1, top):
            if act.pos.numel() == 0:
                break
            # update it - 1 counted from 0 after the initialisation, as the reference counts
            p = p_schedule(self.p_init, it - 1, self.n_queries, self.rescale_schedule)
            if linf:
                cand, patch = self._step_linf(act, p, gen)
            else:
                cand, patch = self._step_l2(act.x, act.best, act.eps, p, gen), None
            m_new = self._margin(model, cand, act.y)
            better = m_new < act.m  # no host sync: every row is written, unchanged where False
            if patch is not None:
                patch.accept(act.best, better)  # act.best is Square's own (a copy, see start)
            else:
                act.best = torch.where(better[:, None, None, None], cand, act.best)
            act.m = torch.minimum(m_new, act.m)
            done = m_new <= 0
            if it + 1 in stops:  # some points have spent their budget
                assert act.limit is not None
                done = done | (act.limit <= it + 1)
            if bool(done.any()):  # write out the points that crossed (or are spent), drop them
                gone = done.nonzero().squeeze(1)
                x_best[act.pos[gone]] = act.best[gone]
                q[act.pos[gone]] = it + 1
                act = act.keep((~done).nonzero().squeeze(1))
        if act.pos.numel():  # still robust: every query spent
            x_best[act.pos] = act.best
            q[act.pos] = top
        x_adv[todo] = x_best
        queries[todo] = q
        return x_adv, queries

    def _whole_steps(self, device: torch.device) -> bool:
        """Does the query loop run masked, from whole-step CUDA graphs? (Linf, on a CUDA device
        in float32, with ``cuda_graphs``.)"""
        linf = self.threat.name == "linf"
        return linf and self.cuda_graphs and device.type == "cuda" and not self._bf16

    def _masked(
        self,
        model: Forward,
        x: Tensor,
        y: Tensor,
        eps: Tensor,
        best: Tensor,
        m: Tensor,
        budget: Tensor | None,
        top: int,
        gen: torch.Generator,
    ) -> tuple[Tensor, Tensor]:
        """The Linf queries from whole-step CUDA graphs (:func:`run_linf_masked`)."""
        h, w = x.shape[2:]
        sides = [
            _linf_side(p_schedule(self.p_init, it - 1, self.n_queries, self.rescale_schedule), h, w)
            for it in range(1, top)
        ]
        best, q, stepper = run_linf_masked(
            model, x, y, eps, best, m, budget, sides, gen, exact=self._exact_same,
            graphs=x.device.type == "cuda",
        )  # fmt: skip
        self.graph_stats = {"captures": stepper.captures, "replays": stepper.replays,
                            "failed": stepper.failed}  # fmt: skip
        return best, q

    def _margin(self, model: Forward, x: Tensor, y: Tensor) -> Tensor:
        """Margins of queries ``x``; under bf16, rows that crossed or are within rounding of the
        boundary get their float32 margin (:func:`~robustlab.attacks.precision.float32_rows`)."""
        if not bf16_pass(getattr(self, "_bf16", False), x):
            return hard_margin(model(x), y)
        with passes(True, x.device):
            z = model(x)
        zf = z.float()
        m = hard_margin(zf, y)
        rows, z32 = float32_rows(model, x, zf, y, m)
        if rows.numel():
            m[rows] = hard_margin(z32, y[rows])
        return m

    # ---------------------------------------------------------------- Linf
    @staticmethod
    def _init_linf(x: Tensor, eps: Tensor, gen: torch.Generator) -> Tensor:
        """Vertical stripes: one random sign per sample, channel and column."""
        n, c, _, w = x.shape
        stripes = _signs((n, c, 1, w), gen, x)
        return (x + eps[:, None, None, None] * stripes).clamp(0.0, 1.0)

    def _step_linf(self, a: _Active, p: float, gen: torch.Generator) -> tuple[Tensor, _Patch]:
        """Set a random square (one per sample) to +-eps, one sign per channel; the signs are
        redrawn (up to 10 times) for samples whose square would not change. Returns the
        candidates and their :class:`_Patch`."""
        n, c, h, w = a.x.shape
        s = _linf_side(p, h, w)
        dev = a.x.device
        vh = torch.randint(0, h - s + 1, (n,), generator=gen, device=dev)
        vw = torch.randint(0, w - s + 1, (n,), generator=gen, device=dev)
        # Work on the squares only, (n, c, s*s) gathered from flat views: outside them the
        # candidate is the best point, so "would not change" compares the squares, and the
        # candidate is one copy plus them.
        idx = square_index(vh, vw, s, w, c)
        assert a.hi is not None and a.lo is not None
        hi, lo = flat_view(a.hi).gather(2, idx), flat_view(a.lo).gather(2, idx)
        best = flat_view(a.best).gather(2, idx)
        new = torch.where(_coins((n, c, 1), gen, dev), hi, lo)
        for _ in range(10):
            if self._exact_same:
                same = (new == best).all((1, 2))
            else:
                same = (new - best).abs().amax((1, 2)) < 1e-7
            if not bool(same.any()):
                break
            redraw = torch.where(_coins((n, c, 1), gen, dev), hi, lo)
            new = torch.where(same.view(-1, 1, 1), redraw, new)
        cand = a.best.clone()
        flat_view(cand).scatter_(2, idx, new)
        return cand, _Patch(idx, new, best)

    # ---------------------------------------------------------------- L2
    @staticmethod
    def _init_l2(x: Tensor, eps: Tensor, gen: torch.Generator) -> Tensor:
        """A grid of tiles of side h // 5, each holding the pseudo-Gaussian pattern (randomly
        transposed) with a random sign per channel; rescaled to L2 norm eps."""
        n, c, h, w = x.shape
        s = max(h // 5, 1)
        pat = pseudo_gaussian_pattern(s, x.device, x.dtype)
        delta = torch.zeros_like(x)
        start_h, start_w = (h - s * (h // s)) // 2, (w - s * (w // s)) // 2
        for top in range(start_h, h - s + 1, s):
            for left in range(start_w, w - s + 1, s):
                flip = torch.rand(n, generator=gen, device=x.device) < 0.5
                tile = torch.where(flip[:, None, None, None], pat.T, pat)
                sign = _signs((n, c, 1, 1), gen, x)
                delta[:, :, top : top + s, left : left + s] += tile * sign
        scale = eps / _l2_norm(delta).clamp_min(1e-12)
        return (x + delta * scale[:, None, None, None]).clamp(0.0, 1.0)

    @staticmethod
    def _step_l2(x: Tensor, x_best: Tensor, eps: Tensor, p: float, gen: torch.Generator) -> Tensor:
        """Move the perturbation mass of a second random square into a first one, where the
        pseudo-Gaussian pattern is added, then rescale the whole perturbation to norm eps."""
        n, c, h, w = x.shape
        s = max(int(round(math.sqrt(p * h * w))), 3)
        s += 1 - s % 2  # odd side
        s = min(s, min(h, w) - 1)
        delta = x_best - x
        r1, c1 = _windows(n, h, w, s, gen, x.device)
        r2, c2 = _windows(n, h, w, s, gen, x.device)
        win1 = _get(delta, r1, c1)
        norm_win1 = win1.pow(2).sum((2, 3)).sqrt()  # (n, c)
        union = torch.zeros(n, 1, h, w, dtype=x.dtype, device=x.device)
        _put(union, r1, c1, 1.0)
        _put(union, r2, c2, 1.0)
        norm_union = (delta * union).pow(2).sum((2, 3)).sqrt()  # (n, c)
        norm_img = _l2_norm(delta)
        pat = pseudo_gaussian_pattern(s, x.device, x.dtype)
        flip = torch.rand(n, generator=gen, device=x.device) < 0.5
        new = torch.where(flip[:, None, None, None], pat.T, pat) * _signs((n, c, 1, 1), gen, x)
        new = new + win1 / (norm_win1[:, :, None, None] + 1e-10)
        budget = ((eps**2 - norm_img**2).clamp_min(0.0)[:, None] / c + norm_union**2).sqrt()
        new = new / new.pow(2).sum((2, 3), keepdim=True).sqrt().clamp_min(1e-12)
        new = new * budget[:, :, None, None]
        delta = delta.clone()
        _put(delta, r2, c2, 0.0)
        _put(delta, r1, c1, new)
        scale = eps / _l2_norm(delta).clamp_min(1e-12)
        return (x + delta * scale[:, None, None, None]).clamp(0.0, 1.0)
