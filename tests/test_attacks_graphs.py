"""CUDA-graph replay of inference passes (robustlab.attacks.graphs) and Square's use of it.

On a CPU the wrapper must be the model itself; the CUDA tests (skipped without a GPU) check that
a replayed pass equals the eager one, padding rows included, under float32 and bf16 autocast,
and that Square under bf16 (which replays only its model passes; in float32 it replays whole
steps, tests/test_attacks_square_graphs.py) finds with graphs what it finds without them."""

from __future__ import annotations

import pytest
import torch
from attack_models import BNNet, linear_model
from torch import nn

from robustlab.attacks.graphs import MAX_GRAPHS, MAX_ROWS, MIN_BUCKET, GraphedForward, bucket
from robustlab.attacks.precision import passes
from robustlab.attacks.square import Square

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_buckets_pad_little() -> None:
    sizes = (1, 8, 9, 17, 64, 65, 100, 209, 216, 1000, 1025)
    assert [bucket(n) for n in sizes] == [8, 8, 16, 24, 64, 72, 104, 224, 224, 1024, 1152]
    for n in range(1, 3000):
        b = bucket(n)
        assert b >= n and b % MIN_BUCKET == 0 and bucket(b) == b
        assert b - n < MIN_BUCKET or (b - n) / n <= 0.125, n
    assert len({bucket(n) for n in range(1, 1025)}) == 40  # few graphs for a shrinking batch
    with pytest.raises(ValueError, match="at least one row"):
        bucket(0)


class Counting(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.model(x)


def test_on_a_cpu_the_model_itself_runs() -> None:
    model = Counting(BNNet()).eval()
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    g = GraphedForward(model)
    with torch.inference_mode():
        assert torch.equal(g(x), model(x))
    assert model.calls == 2 and g.replays == 0 and g.failed is None


def test_square_on_a_cpu_is_unchanged_by_the_option() -> None:
    model = BNNet().eval()
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(16, 1, 8, 8, generator=gen), torch.randint(0, 5, (16,), generator=gen)
    a = Square(eps=0.1, n_queries=50, seed=0, cuda_graphs=True)(model, x, y)
    b = Square(eps=0.1, n_queries=50, seed=0, cuda_graphs=False)(model, x, y)
    assert torch.equal(a, b)


def _cifar_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(128, 10),
    )  # fmt: skip


@cuda
@pytest.mark.parametrize("bf16", [False, True])
def test_replayed_passes_equal_eager_ones_padding_included(bf16: bool) -> None:
    dev = torch.device("cuda")
    model = Counting(_cifar_net()).to(dev).eval()
    g = GraphedForward(model)
    gen = torch.Generator(device=dev).manual_seed(0)
    with torch.inference_mode():
        for n in (40, 33, 40, 5, 38):  # buckets 40, 40, 40, 8, 40: stale padding rows
            x = torch.rand(n, 3, 32, 32, generator=gen, device=dev)
            pad = torch.cat([x, torch.rand(bucket(n) - n, 3, 32, 32, device=dev)])
            with passes(bf16, dev):  # a fresh autocast context each time, as Square's
                out = g(x)
                eager = model(pad)[:n]
            assert out.shape == (n, 10) and out.dtype == eager.dtype
            tol = 2e-2 if bf16 else 1e-5
            torch.testing.assert_close(out, eager, rtol=tol, atol=tol)
    assert g.replays == 5 and g.failed is None
    # two buckets, each recorded once after its warm-up passes; every later call is a replay
    assert model.calls == 5 + 2 * (g.warmup + 1)


@cuda
def test_the_least_recently_used_graph_is_freed_first() -> None:
    dev = torch.device("cuda")
    model = _cifar_net().to(dev).eval()
    g = GraphedForward(model)
    sizes = [8 * (i + 1) for i in range(MAX_GRAPHS + 1)] + [8]  # the first size comes back
    with torch.inference_mode():
        for n in sizes:
            x = torch.rand(n, 3, 32, 32, device=dev)
            torch.testing.assert_close(g(x), model(x), rtol=1e-5, atol=1e-5)
    assert g.captures == MAX_GRAPHS + 2 and len(g._graphs) == MAX_GRAPHS


@cuda
def test_passes_of_more_than_max_rows_run_eagerly() -> None:
    dev = torch.device("cuda")
    model = Counting(_cifar_net()).to(dev).eval()
    g = GraphedForward(model)
    x = torch.rand(MAX_ROWS + 1, 3, 32, 32, device=dev)
    with torch.inference_mode():
        torch.testing.assert_close(g(x), model(x), rtol=0, atol=0)
        assert g.captures == 0 and g.replays == 0
        g(x[:MAX_ROWS])
    assert g.captures == 1 and g.replays == 1
    unlimited = GraphedForward(model, max_rows=None)
    with torch.inference_mode():
        unlimited(x)
    assert unlimited.captures == 1


@cuda
def test_channels_last_inputs_are_replayed_in_channels_last() -> None:
    dev = torch.device("cuda")
    model = _cifar_net().to(dev).to(memory_format=torch.channels_last).eval()
    g = GraphedForward(model)
    x = torch.rand(20, 3, 32, 32, device=dev).contiguous(memory_format=torch.channels_last)
    pad = torch.cat([x, torch.zeros(4, 3, 32, 32, device=dev)])
    pad = pad.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        torch.testing.assert_close(g(x), model(pad)[:20], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(g(x.contiguous()), model(pad.contiguous())[:20])
    (_, static_in, _), (_, plain_in, _) = g._graphs.values()
    assert static_in.is_contiguous(memory_format=torch.channels_last)
    assert plain_in.is_contiguous()


@cuda
def test_a_model_that_cannot_be_captured_runs_eagerly_with_a_warning() -> None:
    class Syncs(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)[:, :3] * float(x.sum() > 0)  # a CPU read of a GPU value

    g = GraphedForward(Syncs())
    x = torch.rand(4, 3, 2, 2, device="cuda")
    with torch.inference_mode(), pytest.warns(RuntimeWarning, match="run eagerly"):
        out = g(x)
    torch.testing.assert_close(out, x.flatten(1)[:, :3])
    assert g.failed is not None
    with torch.inference_mode():
        torch.testing.assert_close(g(x), out)  # later calls: eager, no new warning


class Padded(nn.Module):
    """``model`` run eagerly on batches padded to their graph's bucket: the same kernels on the
    same shapes as a replay, so a row-independent model gives the replay's bits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if n > MAX_ROWS:  # run eagerly by GraphedForward too
            return self.model(x)
        return self.model(torch.cat([x, x.new_zeros((bucket(n) - n, *x.shape[1:]))]))[:n]


@cuda
def test_square_under_bf16_with_graphs_finds_what_it_finds_without_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[GraphedForward] = []

    class Recorded(GraphedForward):
        def __init__(self, *a, **kw) -> None:
            super().__init__(*a, **kw)
            made.append(self)

    monkeypatch.setattr("robustlab.attacks.square.GraphedForward", Recorded)
    dev = torch.device("cuda")
    model = nn.Sequential(nn.Flatten(), linear_model(3 * 16 * 16, 10).float()).to(dev).eval()
    gen = torch.Generator(device=dev).manual_seed(2)
    x = torch.rand(100, 3, 16, 16, generator=gen, device=dev)
    with torch.no_grad():
        y = model(x).argmax(1)  # every point starts correct
    eps = 4 / 255  # about 70% broken: the queries start eager (> MAX_ROWS) and end replayed
    kw = {"eps": eps, "n_queries": 300, "seed": 0, "precision": "bf16"}
    graphed = Square(**kw, cuda_graphs=True)
    adv = graphed(model, x, y)
    assert made[-1].replays > 0 and made[-1].failed is None
    plain = Square(**kw, cuda_graphs=False)
    eager = plain(Padded(model).eval(), x, y)
    assert (adv - x).abs().amax() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        broken = (model(adv).argmax(1) != y).float().mean().item()
    assert 0.4 < broken < 0.95, broken  # a test that can tell the runs apart
    assert torch.equal(adv, eager), (adv - eager).abs().amax()
    assert graphed.queries is not None and plain.queries is not None
    assert torch.equal(graphed.queries, plain.queries)
