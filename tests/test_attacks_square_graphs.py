"""Square's masked Linf query loop (robustlab.attacks.square_graphs), which Square runs on a GPU.

On a CPU: the vectorised loop equals a row-by-row reference written from Square's definition
with the same draws (budgets, compaction, channels_last and the inexact comparison included);
Square through it is as strong as Square's compacting loop; the warm-up, capture and replays
run every step once (with a fake graph); no operator of a step reads a value on the host. On a
GPU (skipped here): a step replayed from its CUDA graph equals the eager step, and Square uses
the graphs by default."""

from __future__ import annotations

import pytest
import torch
from attack_models import linear_model
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from robustlab.attacks.boundary import hard_margin
from robustlab.attacks.square import Square, _linf_side, p_schedule
from robustlab.attacks.square_graphs import BLOCK, DRAWS, draw_block, run_linf_masked

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def reference_loop(model, x, y, eps, best, m, limit, sides, gen, exact, compact_below):
    """Square's Linf queries one row at a time: a random square (position from the block's
    uniforms), the first of the row's DRAWS sign draws that changes it, one query for the
    batch, acceptance if the margin falls; a row stops when it is misclassified or its budget
    is spent; every BLOCK steps new draws, after dropping the finished rows if at most
    ``compact_below`` of the batch is live."""
    n, c, h, w = x.shape
    e = eps[:, None, None, None]
    lo, hi = (x - e).clamp(0, 1), (x + e).clamp(0, 1)
    best, m = best.clone(), m.clone()
    q = [1] * n
    live = [bool(m[r] > 0) and (limit is None or int(limit[r]) > 1) for r in range(n)]
    rows = list(range(n))
    for i, s in enumerate(sides):
        if i % BLOCK == 0:
            n_live = sum(live[r] for r in rows)
            if n_live == 0:
                break
            if n_live <= compact_below * len(rows):
                rows = [r for r in rows if live[r]]
            u, coins = draw_block(gen, BLOCK, len(rows), c, x.device)
        j = i % BLOCK
        cand = best[rows].clone()
        for b, r in enumerate(rows):
            vh = min(int(u[j, b, 0] * (h - s + 1)), h - s)
            vw = min(int(u[j, b, 1] * (w - s + 1)), w - s)
            win = (slice(None), slice(vh, vh + s), slice(vw, vw + s))
            for d in range(DRAWS):
                trial = torch.where(coins[j, b, d][:, None, None], hi[r][win], lo[r][win])
                diff = (trial - best[r][win]).abs().max()
                if (diff > 0) if exact else (diff >= 1e-7):
                    break
            cand[b][win] = trial
        margins = hard_margin(model(cand), y[rows])
        for b, r in enumerate(rows):
            if not live[r]:
                continue
            q[r] += 1
            if margins[b] < m[r]:
                best[r], m[r] = cand[b], margins[b]
            if margins[b] <= 0 or (limit is not None and q[r] >= int(limit[r])):
                live[r] = False
    return best, torch.tensor(q)


def _problem(n: int, seed: int, eps: float, channels_last: bool = False):
    model = nn.Sequential(nn.Flatten(), linear_model(3 * 8 * 8, 10, seed=seed)).eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 8, generator=g, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        y = model(x).argmax(1)
    epsv = torch.full((n,), eps, dtype=torch.float64)
    signs = torch.randint(0, 2, (n, 3, 1, 8), generator=g).to(x.dtype) * 2 - 1
    best = (x + epsv[:, None, None, None] * signs).clamp(0, 1)  # Square's stripes
    with torch.no_grad():
        m = hard_margin(model(best), y)
    return model, x, y, epsv, best, m


@pytest.mark.parametrize(
    ("eps", "budgets", "compact", "channels_last"),
    [
        (0.02, False, 0.0, False),  # no budgets, no compaction
        (0.02, True, 0.25, False),  # budgets and compaction (the default)
        (0.02, True, 0.25, True),  # channels_last images
        (3e-6, False, 0.25, False),  # eps < 1e-5: squares compared to 1e-7, not exactly
    ],
)
def test_masked_loop_equals_a_row_by_row_reference(eps, budgets, compact, channels_last) -> None:
    model, x, y, epsv, best, m = _problem(48, 0, eps, channels_last)
    limit = None
    if budgets:
        limit = torch.randint(1, 150, (48,), generator=torch.Generator().manual_seed(1))
    top = 150 if limit is None else int(limit.max())
    sides = [_linf_side(p_schedule(0.8, it - 1, 150, False), 8, 8) for it in range(1, top)]
    exact = eps >= 1e-5
    args = (model, x, y, epsv, best, m, limit, sides)
    with torch.inference_mode():
        got, q, stepper = run_linf_masked(
            *args, torch.Generator().manual_seed(5), exact=exact, graphs=False,
            compact_below=compact,
        )  # fmt: skip
        want, q_ref = reference_loop(*args, torch.Generator().manual_seed(5), exact, compact)
    assert torch.equal(q, q_ref)
    assert torch.equal(got, want)
    assert stepper.captures == 0 and stepper.replays == 0
    with torch.no_grad():
        final = hard_margin(model(got), y)
    broken = (final <= 0).float().mean().item()
    if exact:
        assert 0.2 < broken < 0.9, broken  # the attack worked, and not on every point
        assert (final <= m + 1e-12).all()  # never worse than the start
    if limit is not None:
        assert (q <= limit.clamp_min(1)).all() and (q >= 1).all()
        assert (q[final > 0] == limit[final > 0]).all()  # a robust row spent its budget


def test_square_through_the_masked_loop_is_as_strong(monkeypatch: pytest.MonkeyPatch) -> None:
    """Square's compacting loop (a CPU's) against its masked loop (a GPU's), run here on a CPU:
    other random draws, the same attack."""
    results = {}
    for masked in (False, True):
        monkeypatch.setattr(Square, "_whole_steps", lambda self, device, on=masked: on)
        broken, margins = [], []
        for seed in (0, 1):
            model, x, y, *_ = _problem(200, 10 + seed, 0.01)
            sq = Square(eps=0.01, n_queries=200, seed=seed)
            adv = sq(model, x, y)
            assert (adv - x).abs().amax() <= 0.01 + 1e-12 and adv.min() >= 0 and adv.max() <= 1
            assert (sq.graph_stats is not None) == masked
            with torch.no_grad():
                final = hard_margin(model(adv), y)
            broken.append((final <= 0).double().mean())
            margins.append(final.clamp_min(0).mean())
            assert sq.queries is not None
            assert (sq.queries[final > 0] == 200).all()  # robust rows spent every query
        results[masked] = (torch.stack(broken).mean().item(), torch.stack(margins).mean().item())
    (b0, m0), (b1, m1) = results[False], results[True]
    assert 0.15 < b0 < 0.85, b0  # a test that can tell a broken loop from a working one
    assert abs(b1 - b0) < 0.08, (b0, b1)
    assert abs(m1 - m0) < 0.2 * m0, (m0, m1)


@cuda
def test_a_replayed_step_equals_the_eager_step() -> None:
    dev = torch.device("cuda")
    model = nn.Sequential(nn.Flatten(), linear_model(3 * 16 * 16, 10).float()).to(dev).eval()
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.rand(96, 3, 16, 16, generator=g, device=dev)
    with torch.no_grad():
        y = model(x).argmax(1)
    eps = torch.full((96,), 4 / 255, device=dev)
    signs = torch.randint(0, 2, (96, 3, 1, 16), generator=g, device=dev) * 2 - 1
    best = (x + eps[:, None, None, None] * signs).clamp(0, 1)
    limit = torch.randint(1, 400, (96,), generator=g, device=dev)
    sides = [_linf_side(p_schedule(0.8, it - 1, 400, False), 16, 16) for it in range(1, 400)]
    out = {}
    with torch.inference_mode():
        m = hard_margin(model(best), y)
        for graphs in (False, True):
            gen = torch.Generator(device=dev).manual_seed(3)
            out[graphs] = run_linf_masked(
                model, x, y, eps, best, m, limit, sides, gen, exact=True, graphs=graphs
            )
    (b0, q0, _), (b1, q1, stepper) = out[False], out[True]
    assert stepper.failed is None and stepper.captures >= 2 and stepper.replays > 100
    assert torch.equal(q0, q1) and torch.equal(b0, b1)
    assert (q0 < limit.clamp_min(1)).any()  # some rows broke early, so compaction could run


@cuda
def test_square_on_a_gpu_replays_whole_steps_and_stays_as_strong() -> None:
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(64, 10),
    ).to(dev).eval()  # fmt: skip
    gen = torch.Generator(device=dev).manual_seed(2)
    x = torch.rand(400, 3, 16, 16, generator=gen, device=dev)
    with torch.no_grad():
        y = model(x).argmax(1)
    broken = {}
    for graphs in (True, False):
        sq = Square(eps=16 / 255, n_queries=300, seed=0, cuda_graphs=graphs)
        adv = sq(model, x, y)
        assert (adv - x).abs().amax() <= 16 / 255 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
        with torch.no_grad():
            broken[graphs] = (model(adv).argmax(1) != y).float().mean().item()
        if graphs:
            assert sq.graph_stats is not None and sq.graph_stats["failed"] is None
            assert sq.graph_stats["replays"] > 100
        else:
            assert sq.graph_stats is None
    # on a CPU, this model and these images: 0.745-0.765 broken by either loop, 2 seeds each
    assert 0.5 < broken[False] < 0.95, broken
    assert abs(broken[True] - broken[False]) < 0.06, broken


@cuda
def test_a_step_that_cannot_be_captured_runs_eagerly_with_a_warning() -> None:
    class Syncs(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)[:, :10] * float(x.sum() > 0)  # a CPU read of a GPU value

    dev = torch.device("cuda")
    x = torch.rand(8, 3, 4, 4, device=dev)
    y = x.flatten(1)[:, :10].argmax(1)  # every point starts correct, so Square queries
    sq = Square(eps=0.05, n_queries=40, seed=0)
    with pytest.warns(RuntimeWarning, match="run eagerly"):
        adv = sq(Syncs().eval(), x, y)
    assert sq.graph_stats is not None and sq.graph_stats["failed"] is not None
    assert (adv - x).abs().amax() <= 0.05 + 1e-6


class _FakeGraph:
    """Stands in for a CUDA graph on a CPU: capture records the step without running it, and a
    replay runs what was recorded, on the tensors it was recorded with."""

    def __init__(self, run) -> None:
        self.run = run

    def replay(self) -> None:
        self.run()


def test_the_graph_control_flow_runs_every_step_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Warm-up, capture and replays in the order a GPU sees them, with a fake graph: the same
    points and query counts as the eager loop, one capture per side and compaction, and every
    other step a replay of the current state's graph."""
    import contextlib

    import robustlab.attacks.square_graphs as sg

    def capture(self, st, s) -> None:  # what _capture does, minus CUDA
        self.graph = _FakeGraph(lambda: sg._step(self.model, st, s, self.exact))
        self.captures += 1

    monkeypatch.setattr(sg._Stepper, "_capture", capture)
    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: _NoStream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda d=None: _NoStream())
    monkeypatch.setattr(torch.cuda, "device", lambda d: contextlib.nullcontext())
    model, x, y, epsv, best, m = _problem(48, 0, 0.02)
    limit = torch.randint(1, 150, (48,), generator=torch.Generator().manual_seed(1))
    sides = [_linf_side(p_schedule(0.8, it - 1, 150, False), 8, 8) for it in range(1, 150)]
    out, calls_of, executed = {}, {}, {}
    step, call = sg._step, sg._Stepper.__call__
    counts = {"step": 0, "call": 0}

    def counted_step(*a) -> None:
        counts["step"] += 1
        step(*a)

    def counted_call(self, st, s) -> None:
        counts["call"] += 1
        call(self, st, s)

    monkeypatch.setattr(sg, "_step", counted_step)
    monkeypatch.setattr(sg._Stepper, "__call__", counted_call)
    with torch.inference_mode():
        for graphs in (False, True):
            counts.update(step=0, call=0)
            out[graphs] = run_linf_masked(
                model, x, y, epsv, best, m, limit, sides, torch.Generator().manual_seed(5),
                exact=True, graphs=graphs,
            )  # fmt: skip
            calls_of[graphs], executed[graphs] = counts["call"], counts["step"]
    (b0, q0, _), (b1, q1, stepper) = out[False], out[True]
    assert torch.equal(q0, q1) and torch.equal(b0, b1)
    calls = calls_of[True]
    assert executed[True] == calls == calls_of[False]  # every step ran once, none skipped
    # a warm-up step per side and per compaction, then a capture; the rest are replays
    assert stepper.captures >= 4 and stepper.replays >= calls - 2 * stepper.captures - 8
    assert stepper.replays > calls // 2


class _NoStream:
    def wait_stream(self, other) -> None:
        pass

    def synchronize(self) -> None:
        pass


class _HostReads(TorchDispatchMode):
    """Records the operators that make a GPU wait for the host to read a value: a step that
    uses one cannot be recorded as a CUDA graph."""

    READS = frozenset(
        {"aten::item", "aten::_local_scalar_dense", "aten::nonzero", "aten::is_nonzero",
         "aten::masked_select", "aten::unique", "aten::_unique2", "aten::equal"}
    )  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        if func._schema.name in self.READS:
            self.seen.append(func._schema.name)
        return func(*args, **(kwargs or {}))


def _one_step(model: nn.Module, c: int, h: int) -> list[str]:
    import robustlab.attacks.square_graphs as sg

    x = torch.rand(3, c, h, h, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(1)
    e = torch.full((3, 1, 1, 1), 8 / 255)
    lo, hi = (x - e).clamp(0, 1), (x + e).clamp(0, 1)
    u, coins = draw_block(torch.Generator().manual_seed(0), BLOCK, 3, c, x.device)
    st = sg._State(torch.arange(3), y, lo, hi, hi.clone(), torch.ones(3),
                   torch.ones(3, dtype=torch.long), torch.ones(3, dtype=torch.bool),
                   torch.full((3,), 100), u, coins, torch.zeros(1, dtype=torch.long))  # fmt: skip
    reads = _HostReads()
    with torch.inference_mode(), reads:
        sg._step(model, st, min(5, h - 1), True)
    assert int(st.q.sum()) == 6 and int(st.k) == 1  # the step ran
    return reads.seen


def test_a_step_reads_nothing_on_the_host() -> None:
    """What a GPU graph needs: no operator of a step (the robustlab models' passes included)
    waits for a value on the host. Checked by the operators dispatched on a CPU."""
    from robustlab.models import create_model

    for name, ds, c, h in (("preact_resnet18", "cifar10", 3, 32), ("smallcnn", "mnist", 1, 28)):
        assert _one_step(create_model(name, dataset=ds).eval(), c, h) == [], name

    class Reads(nn.Module):  # the detector sees a host read
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)[:, :10] * float(x.sum() > 0)

    assert _one_step(Reads(), 3, 4)[:1] in (["aten::item"], ["aten::_local_scalar_dense"])
