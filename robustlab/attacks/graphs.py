"""CUDA-graph replay of a model's inference pass, for attacks that query a model thousands of times.

One job: :class:`GraphedForward`, a drop-in for ``model(x)`` in a query loop (Square's 5,000
queries under bf16 or in L2; its float32 Linf loop replays whole steps instead,
:mod:`robustlab.attacks.square_graphs`). Run eagerly, each query costs the CPU time to launch
the model's kernels one by one, however few rows are left; a CUDA graph records the pass once
and replays all its kernels with one launch. On an H200 with a CIFAR-10 PreActResNet-18 (500
test images, 216 points left for Square), ``fast``'s ``square-close``, about 22 points with
budgets of up to 5,000 queries, took 6.8 s replayed against 14.8 s eagerly.

- Only passes of at most :data:`MAX_ROWS` rows are replayed; larger ones run eagerly. On the
  H200, Square's queries of 216 PreActResNet-18 rows took 2.9 ms eagerly and 3.4 ms replayed
  (at 256 rows). Eagerly, a query cost no less at about 22 rows (``fast``'s ``square-close``: at
  least 3.0 ms, 14.8 s for at most 5,000 queries), so the GPU's arithmetic was hidden under the
  launches. A replay removes the launches but serialises the rest: the CPU waits for the pass,
  then runs Square's bookkeeping while the GPU idles. The run does not separate that from the
  19% padding; either way large batches do not gain. Small batches do: ``square-close`` took
  6.8 s replayed. 64 rows is a rule of thumb from that one model and GPU: below it, a
  CIFAR-size network's pass is launch-bound on current GPUs.
- One graph per batch-size bucket (:func:`bucket`: a multiple of :data:`MIN_BUCKET`, or of an
  eighth of the power of two below the batch, whichever is larger): a query batch of ``n`` rows
  is copied into the bucket's static input, the graph replays, and the first ``n`` output rows
  are returned (a copy). The padding rows hold earlier inputs; in inference (``model.eval()``,
  no batch statistics) a row's logits do not depend on the other rows. At most
  :data:`MAX_GRAPHS` graphs are kept (the least recently used goes first): Square's batches
  only shrink, so older, larger graphs are not needed again.
- Autocast is part of the key: a pass under bf16 autocast (:func:`~robustlab.attacks.precision.
  passes`) is recorded under bf16 autocast with its weight cache off, as graph capture requires.
- Anything else runs eagerly, unchanged: CPU inputs, passes with gradients enabled, and every
  pass after a capture that failed (a model that synchronises with the CPU in its forward
  pass, say), with a warning naming the error.
- Graphs read the parameters' memory as it is when they are recorded: build one
  :class:`GraphedForward` per attack call and drop it afterwards (Square does), never across a
  change of the weights.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict

import torch
from torch import Tensor, nn

__all__ = ["MAX_GRAPHS", "MAX_ROWS", "MIN_BUCKET", "GraphedForward", "bucket"]

MIN_BUCKET = 8
MAX_ROWS = 64  # larger passes run eagerly (see the module docstring)
MAX_GRAPHS = 4  # Square's query pass and, under bf16, its float32 re-check, with room to spare


def bucket(n: int) -> int:
    """The batch size of the graph that serves ``n`` rows: ``n`` rounded up to a multiple of
    :data:`MIN_BUCKET` or of an eighth of the power of two below ``n``, whichever is larger (at
    most 12.5% padding from 64 rows on; below, passes are too small for padding to cost)."""
    if n < 1:
        raise ValueError(f"a batch needs at least one row, got {n}")
    step = max(MIN_BUCKET, (1 << (n.bit_length() - 1)) // 8)
    return -(-n // step) * step


def _channels_last(x: Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class GraphedForward:
    """``model(x)`` for inference, replayed from CUDA graphs on a GPU (see the module's
    docstring); ``enabled=False``, a CPU input or more than ``max_rows`` rows (``None``: no
    limit): ``model(x)`` itself."""

    def __init__(
        self,
        model: nn.Module,
        enabled: bool = True,
        warmup: int = 2,
        max_rows: int | None = MAX_ROWS,
    ) -> None:
        self.model, self.enabled, self.warmup = model, bool(enabled), int(warmup)
        self.max_rows = max_rows
        self._graphs: OrderedDict[tuple, tuple[torch.cuda.CUDAGraph, Tensor, Tensor]]
        self._graphs = OrderedDict()
        self.failed: str | None = None  # the capture error, once one failed
        self.replays = self.captures = 0

    def __call__(self, x: Tensor) -> Tensor:
        if not self.enabled or x.device.type != "cuda" or self.failed or torch.is_grad_enabled():
            return self.model(x)
        if self.max_rows is not None and x.shape[0] > self.max_rows:
            return self.model(x)
        bf16 = torch.is_autocast_enabled("cuda")
        dtype = torch.get_autocast_dtype("cuda") if bf16 else None
        n, nhwc = x.shape[0], x.dim() == 4 and _channels_last(x)
        key = (bucket(n), x.dtype, tuple(x.shape[1:]), nhwc, dtype, x.device)
        with torch.cuda.device(x.device):  # capture and replay on the input's GPU
            entry = self._graphs.get(key)
            if entry is None:
                while len(self._graphs) >= MAX_GRAPHS:  # free the least recently used first
                    self._graphs.popitem(last=False)
                entry = self._capture(x, key[0], nhwc, dtype)
                if entry is None:
                    return self.model(x)
                self._graphs[key] = entry
            self._graphs.move_to_end(key)
            graph, static_in, static_out = entry
            static_in[:n].copy_(x)
            graph.replay()
            self.replays += 1
            return static_out[:n].clone()

    def _pass(self, x: Tensor, dtype: torch.dtype | None) -> Tensor:
        if dtype is None:
            return self.model(x)
        with torch.autocast("cuda", dtype=dtype, cache_enabled=False):
            return self.model(x)

    def _capture(
        self, x: Tensor, rows: int, nhwc: bool, dtype: torch.dtype | None
    ) -> tuple[torch.cuda.CUDAGraph, Tensor, Tensor] | None:
        static_in = x.new_zeros((rows, *x.shape[1:]))
        if nhwc:  # the memory format the eager pass would see, so the same kernels run
            static_in = static_in.contiguous(memory_format=torch.channels_last)
        static_in[: x.shape[0]].copy_(x)
        try:
            side = torch.cuda.Stream(device=x.device)
            side.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(side):  # warm-up off the capture: lazy inits, cuDNN plans
                for _ in range(self.warmup):
                    self._pass(static_in, dtype)
            torch.cuda.current_stream(x.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._pass(static_in, dtype)
        except Exception as e:  # noqa: BLE001 - any capture failure means: run eagerly
            self.failed = f"{type(e).__name__}: {e}"
            self._graphs.clear()
            torch.cuda.synchronize(x.device)
            warnings.warn(
                f"CUDA graph capture of {type(self.model).__name__} failed ({self.failed}); "
                "its passes run eagerly",
                RuntimeWarning,
                stacklevel=3,
            )
            return None
        self.captures += 1
        return graph, static_in, static_out
