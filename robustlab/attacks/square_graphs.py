"""Square's Linf query loop for a GPU: masked rows, no host synchronisation per query, and each
step (the model's pass included) replayed from one CUDA graph.

One job: :func:`run_linf_masked`, the loop that :class:`~robustlab.attacks.square.Square` runs
on a CUDA device in float32 with ``cuda_graphs=True``; its square geometry (:func:`linf_bounds`,
:func:`square_index`, :func:`flat_view`, :func:`dense`) is also the compacting loop's. Why: on an
H200, with a CIFAR-10 PreActResNet-18, Square's eager queries cost about 3 ms each whether 22
or 216 points were left, because the CPU launching some hundred small kernels per query was the
bound, not the GPU. With only the model's pass replayed (:mod:`robustlab.attacks.graphs`),
``fast``'s ``square-close`` still spent about 1.4 ms per query, most of it, by that arithmetic,
in Square's own bookkeeping and its two host synchronisations per query. Here nothing in a
step waits for the GPU:

- **Masked, not compacted.** Every row stays in the batch; a row stops changing once it is
  misclassified or has spent its query budget (``live`` turns False). Its queries are counted
  as the compacting loop counts them: one per step while live. Once per block of
  :data:`BLOCK` steps the loop reads ``live`` on the host (the block's one synchronisation),
  to stop when no row is left, and compacts the batch when at most :data:`COMPACT_BELOW` of
  its rows are live.
- **Random draws per block.** Square positions (uniform in [0, 1), scaled to the positions a
  side ``s`` allows) and the per-channel signs of :data:`DRAWS` candidate squares per row (the
  first draw and Square's up to 10 redraws) are drawn for a whole block by
  :func:`draw_block`; a step takes its slice by a counter on the device. A row's square is its
  first candidate that changes the row, as Square's redraw loop picks it, found without a loop.
- **One graph per square side.** Square's side only shrinks with the schedule, so one graph is
  kept: after one eager step with a new side (the warm-up a capture needs, on a side stream),
  the step is recorded and then replayed. A graph is dropped (with its memory) only after the
  GPU has finished replaying it: one wait per side. If a capture fails, a warning names the
  error and the loop goes on eagerly, with the same steps.

The draws differ from the compacting loop's (that loop redraws only where needed, and only for
the rows still live), so the two loops are equally strong, not bit-identical: the tests pin
this loop to a row-by-row reference implementation with the same draws, and a replay to the
eager step.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from robustlab.attacks.boundary import hard_margin

__all__ = ["BLOCK", "COMPACT_BELOW", "DRAWS", "draw_block", "run_linf_masked"]

BLOCK = 32  # steps per block of draws; the loop reads ``live`` on the host once per block
COMPACT_BELOW = 0.25  # compact the batch when at most this fraction of its rows is live
DRAWS = 11  # candidate squares per row and step: the first and Square's up to 10 redraws


def linf_bounds(x: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
    """``clamp(x - eps)`` and ``clamp(x + eps)`` to [0, 1], per-row ``eps`` (n,): the two values
    a Linf square can take at each pixel."""
    e = eps[:, None, None, None]
    return (x - e).clamp(0.0, 1.0), (x + e).clamp(0.0, 1.0)


def dense(t: Tensor) -> Tensor:
    """``t`` if it is dense in the NCHW or the channels_last layout (so that :func:`flat_view`
    can view it), else a contiguous copy."""
    if t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last):
        return t
    return t.contiguous()


def flat_view(t: Tensor) -> Tensor:
    """The (n, c, h*w) view of a dense (n, c, h, w) tensor, NCHW or channels_last: gathers read
    the squares from it and scatters write them through it."""
    n, c, h, w = t.shape
    return t.view(n, c, h * w)


def square_index(vh: Tensor, vw: Tensor, s: int, w: int, c: int) -> Tensor:
    """Indices (n, c, s*s) into :func:`flat_view` of the s x s squares whose top-left corners are
    rows ``vh`` and columns ``vw`` (n,) of images ``w`` pixels wide, for every channel."""
    ar = torch.arange(s, device=vh.device)
    flat = (vh[:, None] + ar)[:, :, None] * w + (vw[:, None] + ar)[:, None, :]
    return flat.reshape(-1, 1, s * s).expand(-1, c, s * s)


def draw_block(
    gen: torch.Generator, steps: int, n: int, c: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """The random draws of ``steps`` steps for ``n`` rows of ``c`` channels: positions
    ``(steps, n, 2)`` uniform in [0, 1) (row, column) and signs ``(steps, n, DRAWS, c)``
    (True: ``x + eps``), in this order from ``gen``."""
    u = torch.rand(steps, n, 2, generator=gen, device=device)
    coins = torch.randint(0, 2, (steps, n, DRAWS, c), generator=gen, device=device,
                          dtype=torch.bool)  # fmt: skip
    return u, coins


@dataclass
class _State:
    """The tensors a step reads and updates in place (a graph records their addresses).
    ``pos``: the rows in the caller's batch; ``k``: the step within the block, (1,)."""

    pos: Tensor
    y: Tensor
    lo: Tensor
    hi: Tensor
    best: Tensor
    m: Tensor
    q: Tensor
    live: Tensor
    limit: Tensor | None
    u: Tensor
    coins: Tensor
    k: Tensor

    def keep(self, rows: Tensor) -> _State:
        """The state of the rows ``rows`` only (new tensors: a graph must be recorded anew)."""
        parts = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("u", "coins"):  # redrawn before the next step
            parts[name] = parts[name][:, rows]
        for name in ("pos", "y", "lo", "hi", "best", "m", "q", "live", "limit"):
            t = parts[name]
            parts[name] = None if t is None else t[rows]
        for name in ("lo", "hi", "best"):
            parts[name] = dense(parts[name])
        parts["k"] = self.k.clone()
        return _State(**parts)


def _step(model: nn.Module, st: _State, s: int, exact: bool) -> None:
    """One Square query for every row of ``st``, in place; only live rows change. No host
    synchronisation, so that it can be recorded as a CUDA graph."""
    n, c, h, w = st.best.shape
    u = st.u.index_select(0, st.k)[0]  # (n, 2)
    coins = st.coins.index_select(0, st.k)[0]  # (n, DRAWS, c)
    vh = (u[:, 0] * (h - s + 1)).long().clamp_max(h - s)
    vw = (u[:, 1] * (w - s + 1)).long().clamp_max(w - s)
    idx = square_index(vh, vw, s, w, c)
    hi, lo = flat_view(st.hi).gather(2, idx), flat_view(st.lo).gather(2, idx)
    old = flat_view(st.best).gather(2, idx)
    if exact:  # every Linf value is exactly lo or hi (see Square._run)
        at_hi, at_lo = (old == hi).all(2), (old == lo).all(2)
    else:
        at_hi, at_lo = (old - hi).abs().lt(1e-7).all(2), (old - lo).abs().lt(1e-7).all(2)
    same = torch.where(coins, at_hi[:, None], at_lo[:, None]).all(2)  # (n, DRAWS)
    first = (~same).cumsum(1).eq(0).sum(1).clamp_max(DRAWS - 1)  # the first draw that changes
    sign = coins.gather(1, first.view(n, 1, 1).expand(n, 1, c))[:, 0, :, None]  # (n, c, 1)
    new = torch.where(sign, hi, lo)
    cand = st.best.clone()
    flat_view(cand).scatter_(2, idx, new)
    m_new = hard_margin(model(cand), st.y)
    better = (m_new < st.m) & st.live
    flat_view(st.best).scatter_(2, idx, torch.where(better[:, None, None], new, old))
    st.m.copy_(torch.where(better, m_new, st.m))
    st.q.add_(st.live.long())
    live = st.live & (m_new > 0)
    if st.limit is not None:
        live = live & (st.q < st.limit)
    st.live.copy_(live)
    st.k.add_(1)


class _Stepper:
    """Runs :func:`_step`: eagerly, or replayed from the graph of the current square side."""

    def __init__(self, model: nn.Module, exact: bool, graphs: bool) -> None:
        self.model, self.exact, self.graphs = model, exact, graphs
        self.graph: torch.cuda.CUDAGraph | None = None
        self.side = -1  # the side the graph (or the warm-up) is for
        self.failed: str | None = None
        self.captures = self.replays = 0

    def reset(self) -> None:
        """Forget the graph (the state's tensors were replaced)."""
        self.release()
        self.side = -1

    def release(self) -> None:
        """Drop the graph once the GPU has finished replaying it, so that its memory is never
        handed out while a replay may still read it."""
        if self.graph is not None:
            torch.cuda.current_stream().synchronize()
            self.graph = None

    def __call__(self, st: _State, s: int) -> None:
        if not self.graphs or self.failed:
            _step(self.model, st, s, self.exact)
        elif self.graph is not None and s == self.side:
            self.graph.replay()
            self.replays += 1
        elif s != self.side:  # a new side: one eager step on a side stream is the warm-up
            self.release()
            self.side = s
            dev = st.best.device
            side = torch.cuda.Stream(device=dev)
            side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side):
                _step(self.model, st, s, self.exact)
            torch.cuda.current_stream(dev).wait_stream(side)
        else:
            self._capture(st, s)
            if self.graph is None:
                _step(self.model, st, s, self.exact)
            else:
                self.graph.replay()
                self.replays += 1

    def _capture(self, st: _State, s: int) -> None:
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):  # recorded, not run: the state is unchanged
                _step(self.model, st, s, self.exact)
        except Exception as e:  # noqa: BLE001 - any capture failure means: run eagerly
            self.failed = f"{type(e).__name__}: {e}"
            torch.cuda.synchronize(st.best.device)
            warnings.warn(
                f"CUDA graph capture of Square's step on {type(self.model).__name__} failed "
                f"({self.failed}); its queries run eagerly",
                RuntimeWarning,
                stacklevel=4,
            )
            return
        self.graph = graph
        self.captures += 1


def run_linf_masked(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: Tensor,
    best: Tensor,
    m: Tensor,
    limit: Tensor | None,
    sides: list[int],
    gen: torch.Generator,
    *,
    exact: bool,
    graphs: bool,
    compact_below: float = COMPACT_BELOW,
) -> tuple[Tensor, Tensor, _Stepper]:
    """Square's Linf queries after its initialisation (``best``, margins ``m``), masked.

    ``sides[i]`` is the square side of update ``i + 1``; ``limit``: per-row query budgets (the
    initialisation included), or None; ``exact``: compare squares exactly (every value is
    ``clamp(x -+ eps)``, Square's test for eps >= 1e-5). ``graphs``: replay the steps from CUDA
    graphs (a CUDA device only). Returns the best points, the queries each row used and the
    stepper (its ``captures``, ``replays`` and ``failed``)."""
    n, c = x.shape[:2]
    lo, hi = linf_bounds(x, eps)
    q = torch.ones(n, dtype=torch.long, device=x.device)
    live = (m > 0) if limit is None else (m > 0) & (limit > 1)
    u = torch.empty(BLOCK, n, 2, device=x.device)  # filled at each block's start
    coins = torch.empty(BLOCK, n, DRAWS, c, dtype=torch.bool, device=x.device)
    k = torch.zeros(1, dtype=torch.long, device=x.device)
    pos = torch.arange(n, device=x.device)
    st = _State(pos, y, dense(lo), dense(hi), dense(best.clone()), m.clone(), q, live, limit,
                u, coins, k)  # fmt: skip
    out_best, out_q = best.clone(), q.clone()
    stepper = _Stepper(model, exact, graphs)
    # capture and replay on the inputs' GPU, whichever is current
    with torch.cuda.device(x.device) if graphs else contextlib.nullcontext():
        for i, s in enumerate(sides):
            if i % BLOCK == 0:  # the block's one host synchronisation
                n_live = int(st.live.sum())
                if n_live == 0:
                    break
                if n_live <= compact_below * st.live.numel():
                    out_best[st.pos], out_q[st.pos] = st.best, st.q
                    st = st.keep(st.live.nonzero().squeeze(1))
                    stepper.reset()
                u, coins = draw_block(gen, BLOCK, st.live.numel(), c, x.device)
                st.u.copy_(u)  # in place: a graph reads these tensors
                st.coins.copy_(coins)
                st.k.zero_()
            stepper(st, s)
        out_best[st.pos], out_q[st.pos] = st.best, st.q
        stepper.release()
    return out_best, out_q, stepper
