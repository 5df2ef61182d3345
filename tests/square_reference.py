"""The Square Attack's per-query loop as it was before its vectorised rewrite (robustlab at
3f58413): a reference formulation that the tests and ``bench/bench_square.py`` compare the
current :class:`~robustlab.attacks.square.Square` with (same seed: identical results)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from robustlab.attacks.boundary import hard_margin
from robustlab.attacks.square import Square, p_schedule, pseudo_gaussian_pattern


def _windows(n: int, h: int, w: int, s: int, gen: torch.Generator, device: torch.device):
    vh = torch.randint(0, h - s + 1, (n,), generator=gen, device=device)
    vw = torch.randint(0, w - s + 1, (n,), generator=gen, device=device)
    ar = torch.arange(s, device=device)
    return vh[:, None] + ar, vw[:, None] + ar


def _window_mask(n: int, h: int, w: int, s: int, gen: torch.Generator, device: torch.device):
    vh = torch.randint(0, h - s + 1, (n,), generator=gen, device=device)
    vw = torch.randint(0, w - s + 1, (n,), generator=gen, device=device)
    i = torch.arange(h, device=device) - vh[:, None]
    j = torch.arange(w, device=device) - vw[:, None]
    return (((i >= 0) & (i < s))[:, :, None] & ((j >= 0) & (j < s))[:, None, :])[:, None]


def _get(t: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    ni = torch.arange(t.shape[0], device=t.device)[:, None, None]
    return t[ni, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def _put(t: Tensor, rows: Tensor, cols: Tensor, v: Tensor | float) -> None:
    ni = torch.arange(t.shape[0], device=t.device)[:, None, None]
    if isinstance(v, Tensor):
        v = v.permute(0, 2, 3, 1)
    t[ni, :, rows[:, :, None], cols[:, None, :]] = v


def _signs(shape: tuple[int, ...], gen: torch.Generator, like: Tensor) -> Tensor:
    r = torch.randint(0, 2, shape, generator=gen, device=like.device)
    return (2 * r - 1).to(like.dtype)


def _l2_norm(t: Tensor) -> Tensor:
    return t.flatten(1).norm(dim=1)


class ReferenceSquare(Square):
    """Square with the per-query loop of 3f58413 (index the active points out of the full
    arrays every query; mask, signs and margin built op by op). float32 queries only."""

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, gen: torch.Generator):
        n, c, h, w = x.shape
        logits = model(x)
        eps_all = torch.as_tensor(self.threat.eps, dtype=x.dtype, device=x.device).flatten()
        eps_all = eps_all.expand(n) if eps_all.numel() == 1 else eps_all
        x_adv = x.clone()
        queries = torch.zeros(n, dtype=torch.long, device=x.device)
        todo = (hard_margin(logits, y) > 0).nonzero().squeeze(1)
        if todo.numel() == 0:
            return x_adv, queries
        xs, ys, eps = x[todo], y[todo], eps_all[todo]
        linf = self.threat.name == "linf"
        x_best = self._init_linf(xs, eps, gen) if linf else self._ref_init_l2(xs, eps, gen)
        m_best = hard_margin(model(x_best), ys)
        q = torch.ones(xs.shape[0], dtype=torch.long, device=x.device)
        idx = (m_best > 0).nonzero().squeeze(1)
        for it in range(1, self.n_queries):
            if idx.numel() == 0:
                break
            p = p_schedule(self.p_init, it - 1, self.n_queries, self.rescale_schedule)
            full = idx.numel() == xs.shape[0]
            xi, bi, ei = (xs, x_best, eps) if full else (xs[idx], x_best[idx], eps[idx])
            if linf:
                x_new = self._ref_step_linf(xi, bi, ei, p, gen)
            else:
                x_new = self._ref_step_l2(xi, bi, ei, p, gen)
            m_new = hard_margin(model(x_new), ys if full else ys[idx])
            if full:
                q += 1
                better = m_new < m_best
                x_best = torch.where(better[:, None, None, None], x_new, x_best)
                m_best = torch.minimum(m_new, m_best)
            else:
                q[idx] += 1
                better = m_new < m_best[idx]
                x_best[idx[better]] = x_new[better]
                m_best[idx] = torch.minimum(m_new, m_best[idx])
            if bool((m_new <= 0).any()):
                idx = (m_best > 0).nonzero().squeeze(1)
        x_adv[todo] = x_best
        queries[todo] = q
        return x_adv, queries

    @staticmethod
    def _ref_step_linf(x: Tensor, x_best: Tensor, eps: Tensor, p: float, gen) -> Tensor:
        n, c, h, w = x.shape
        s = int(round(math.sqrt(p * h * w)))
        s = min(max(s, 1), min(h, w) - 1)
        mask = _window_mask(n, h, w, s, gen, x.device)
        e = eps[:, None, None, None]
        new = (x + e * _signs((n, c, 1, 1), gen, x)).clamp(0.0, 1.0)
        for _ in range(10):
            diff = torch.where(mask, (new - x_best).abs(), 0.0)
            same = diff.flatten(1).amax(1) < 1e-7
            if not bool(same.any()):
                break
            redraw = (x + e * _signs((n, c, 1, 1), gen, x)).clamp(0.0, 1.0)
            new = torch.where(same[:, None, None, None], redraw, new)
        return torch.where(mask, new, x_best)

    @staticmethod
    def _ref_init_l2(x: Tensor, eps: Tensor, gen) -> Tensor:
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
    def _ref_step_l2(x: Tensor, x_best: Tensor, eps: Tensor, p: float, gen) -> Tensor:
        n, c, h, w = x.shape
        s = max(int(round(math.sqrt(p * h * w))), 3)
        s += 1 - s % 2
        s = min(s, min(h, w) - 1)
        delta = x_best - x
        r1, c1 = _windows(n, h, w, s, gen, x.device)
        r2, c2 = _windows(n, h, w, s, gen, x.device)
        win1 = _get(delta, r1, c1)
        norm_win1 = win1.pow(2).sum((2, 3)).sqrt()
        union = torch.zeros(n, 1, h, w, dtype=x.dtype, device=x.device)
        _put(union, r1, c1, 1.0)
        _put(union, r2, c2, 1.0)
        norm_union = (delta * union).pow(2).sum((2, 3)).sqrt()
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
