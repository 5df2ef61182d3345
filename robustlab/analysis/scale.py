"""Per-sample cross-class KL and logit-scale normalization (the `metric` paper).

Entropy maximization, label smoothing and adversarial training all shrink the logits, which
lowers the KL metric and the input Fisher norm by itself. To compare models beyond that,
:class:`LogitScaled` divides a model's logits by a constant so that the mean per-sample
standard deviation of the logits over the classes (:func:`logit_scale`) is 1 on given images:
the Fisher norm and the metric of the rescaled model measure how the model separates classes,
not how large its logits are [recon: the paper's robust component is not recovered].

:func:`cross_class_kl_per_sample` gives, per anchor ``i``, the mean ``KL(p_i || p_j)`` over the
samples ``j`` with another label: the KL metric's per-image terms, so that a bootstrap over
test images can resample anchors (their mean over all anchors is the metric of
:func:`robustlab.analysis.fisher.cross_class_kl` with one group holding every sample).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustlab.analysis._util import batches, check_batch, eval_mode, model_device
from robustlab.errors import RobustlabError

__all__ = ["logits_of", "logit_scale", "LogitScaled", "cross_class_kl_per_sample"]


@torch.no_grad()
def logits_of(model: nn.Module, x: Tensor, batch_size: int = 500) -> Tensor:
    """The model's logits (eval mode, CPU, float64)."""
    check_batch(x)
    dev = model_device(model)
    with eval_mode(model):
        return torch.cat([model(x[s].to(dev)).double().cpu() for s in batches(len(x), batch_size)])


def logit_scale(logits: Tensor) -> float:
    """Mean over samples of the standard deviation of each sample's logits over the classes."""
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise RobustlabError("logit_scale needs logits of shape (N, K) with K >= 2")
    return float(logits.double().std(dim=1).mean())


class LogitScaled(nn.Module):
    """``model(x) / scale``: the same classifier with logits rescaled by a constant."""

    def __init__(self, model: nn.Module, scale: float) -> None:
        super().__init__()
        if not scale > 0:
            raise RobustlabError(f"the logit scale must be positive, got {scale}")
        self.model, self.scale = model, float(scale)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x) / self.scale

    @classmethod
    def unit(cls, model: nn.Module, x: Tensor) -> LogitScaled:
        """``model`` rescaled to mean per-sample logit std 1 on ``x``."""
        return cls(model, logit_scale(logits_of(model, x)))


def cross_class_kl_per_sample(logits: Tensor, y: Tensor) -> Tensor:
    """Per anchor ``i``: mean of ``KL(p_i || p_j)`` over ``j`` with ``y_j != y_i`` (float64)."""
    if logits.dim() != 2 or y.dim() != 1 or logits.shape[0] != y.shape[0]:
        raise RobustlabError("cross_class_kl_per_sample needs (N, K) logits and N labels")
    lp = torch.log_softmax(logits.double(), dim=1)
    p = lp.exp()
    # kl[i, j] = sum_k p_ik (log p_ik - log p_jk)
    kl = (p * lp).sum(1, keepdim=True) - p @ lp.T
    other = y[:, None].cpu() != y[None, :].cpu()
    count = other.sum(1)
    if (count == 0).any():
        raise RobustlabError("every anchor needs at least one sample of another class")
    return (kl * other).sum(1) / count
