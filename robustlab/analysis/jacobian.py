"""Input Jacobian of the logits (arXiv:2011.13538): exact Frobenius norm (K backward passes), the
random-projection estimate of Hoffman et al. (2019), and the spectral norm by power iteration.

All functions work per sample on a batch in eval mode and return (N,) tensors on CPU. Samples
must not interact inside the model (eval mode makes BatchNorm per-sample), so one backward pass
through ``sum_i u_i . z_i`` gives every sample's vector-Jacobian product at once.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustlab.analysis._util import batches, check_batch, model_device
from robustlab.attacks.base import attack_mode
from robustlab.errors import RobustlabError

__all__ = [
    "input_jacobian",
    "jacobian_frobenius",
    "jacobian_frobenius_projected",
    "jacobian_spectral_norm",
]


def _flat_sq(v: Tensor) -> Tensor:
    return v.reshape(v.shape[0], -1).pow(2).sum(1)


def input_jacobian(model: nn.Module, x: Tensor) -> Tensor:
    """The full logit Jacobian ``dz/dx`` of one batch, shape (N, K, d) (K backward passes)."""
    check_batch(x)
    with attack_mode(model):
        xr = x.detach().clone().requires_grad_(True)
        z = model(xr)
        rows = []
        for k in range(z.shape[1]):
            (g,) = torch.autograd.grad(z[:, k].sum(), xr, retain_graph=k + 1 < z.shape[1])
            rows.append(g.reshape(x.shape[0], -1))
    return torch.stack(rows, dim=1).detach()


def jacobian_frobenius(model: nn.Module, x: Tensor, batch_size: int = 256) -> Tensor:
    """Exact ``|dz/dx|_F`` per sample: ``sqrt(sum_k |grad_x z_k|^2)``, K backward passes."""
    check_batch(x)
    dev = model_device(model)
    out = []
    with attack_mode(model):
        for s in batches(x.shape[0], batch_size):
            xr = x[s].detach().to(dev).requires_grad_(True)
            z = model(xr)
            total = torch.zeros(xr.shape[0], device=dev, dtype=torch.float64)
            for k in range(z.shape[1]):
                (g,) = torch.autograd.grad(z[:, k].sum(), xr, retain_graph=k + 1 < z.shape[1])
                total += _flat_sq(g).double()
            out.append(total.sqrt().cpu())
    return torch.cat(out)


def jacobian_frobenius_projected(
    model: nn.Module,
    x: Tensor,
    n_proj: int = 1,
    seed: int = 0,
    batch_size: int = 256,
) -> Tensor:
    """Random-projection estimate of ``|dz/dx|_F`` per sample (Hoffman et al., 2019).

    For ``v`` uniform on the unit sphere of R^K, ``E[K |v^T J|^2] = |J|_F^2``; the estimate
    averages ``n_proj`` such projections (one backward pass each) and takes the square root.
    """
    check_batch(x)
    if n_proj < 1:
        raise RobustlabError(f"n_proj must be at least 1, got {n_proj}")
    dev = model_device(model)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    out = []
    with attack_mode(model):
        for s in batches(x.shape[0], batch_size):
            xr = x[s].detach().to(dev).requires_grad_(True)
            z = model(xr)
            n, k = z.shape
            total = torch.zeros(n, device=dev, dtype=torch.float64)
            for j in range(n_proj):
                v = torch.randn(n, k, generator=gen).to(device=dev, dtype=z.dtype)
                v = v / v.norm(dim=1, keepdim=True)
                (g,) = torch.autograd.grad(z, xr, grad_outputs=v, retain_graph=j + 1 < n_proj)
                total += k * _flat_sq(g).double()
            out.append((total / n_proj).sqrt().cpu())
    return torch.cat(out)


def jacobian_spectral_norm(
    model: nn.Module,
    x: Tensor,
    iters: int = 20,
    seed: int = 0,
    batch_size: int = 256,
) -> Tensor:
    """Largest singular value of ``dz/dx`` per sample by power iteration on ``J J^T``.

    Each iteration is one vector-Jacobian product (backward) and one Jacobian-vector product
    (forward mode), so the cost does not grow with K.
    """
    check_batch(x)
    if iters < 1:
        raise RobustlabError(f"iters must be at least 1, got {iters}")
    dev = model_device(model)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    out = []
    with attack_mode(model):
        for s in batches(x.shape[0], batch_size):
            xb = x[s].detach().to(dev)
            xr = xb.clone().requires_grad_(True)
            z = model(xr)
            u = torch.randn(z.shape, generator=gen).to(device=dev, dtype=z.dtype)
            u = u / u.norm(dim=1, keepdim=True)
            sigma = torch.zeros(z.shape[0], device=dev, dtype=z.dtype)
            for _ in range(iters):
                (w,) = torch.autograd.grad(z, xr, grad_outputs=u, retain_graph=True)  # J^T u
                sigma = w.reshape(w.shape[0], -1).norm(dim=1)
                w = w / sigma.clamp_min(1e-30).reshape(-1, *([1] * (w.dim() - 1)))
                _, jw = torch.func.jvp(model, (xb,), (w,))  # J w, unit-norm w
                u = jw / jw.norm(dim=1, keepdim=True).clamp_min(1e-30)
            out.append(sigma.detach().double().cpu())
    return torch.cat(out)
