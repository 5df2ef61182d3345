"""Model evaluation on tensors: device selection, batched predictions and clean accuracy."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from tqdm import tqdm

from robustlab.errors import RobustlabError

__all__ = ["resolve_device", "predict", "clean_accuracy"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/None: CUDA when available, else CPU; ``"cuda"`` without a GPU is an error."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise RobustlabError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RobustlabError(
            "device 'cuda' requested but no CUDA GPU is available (use --device cpu)"
        )
    return dev


def _as_float_batch(x: Tensor, device: torch.device) -> Tensor:
    """uint8 images -> float in [0, 1]; float images are checked to lie in [0, 1]."""
    x = x.to(device, non_blocking=True)
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    if not x.is_floating_point():
        raise RobustlabError(f"images must be uint8 or float in [0, 1], got dtype {x.dtype}")
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0 or bool(x.isnan().any())):
        raise RobustlabError(
            "float images must lie in [0, 1] without NaN (normalization belongs inside the model)"
        )
    return x


@torch.no_grad()
def predict(
    model: nn.Module,
    x: Tensor,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    progress: bool = False,
    desc: str = "predict",
) -> Tensor:
    """Predicted classes (int64, on CPU) of images ``x`` (uint8 or float in [0, 1], NCHW).

    The model runs in eval mode on ``device`` (None: where its parameters are); its training
    mode is restored afterwards.
    """
    if batch_size < 1:
        raise RobustlabError(f"batch size must be >= 1, got {batch_size}")
    if x.dim() != 4:
        raise RobustlabError(f"images must be a batch (N, C, H, W), got shape {tuple(x.shape)}")
    if device is None:
        dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    else:
        dev = resolve_device(device)
    model.to(dev)
    was_training = model.training
    model.eval()
    out = torch.empty(x.shape[0], dtype=torch.long)
    try:
        starts = range(0, x.shape[0], batch_size)
        for s in tqdm(starts, desc=desc, unit="batch", disable=not progress, leave=False):
            xb = _as_float_batch(x[s : s + batch_size], dev)
            out[s : s + xb.shape[0]] = model(xb).argmax(1).cpu()
    finally:
        model.train(was_training)
    return out


def clean_accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> float:
    """Fraction of images ``x`` (uint8 or float in [0, 1]) classified as labels ``y``."""
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise RobustlabError(
            f"got {x.shape[0]} images but labels of shape {tuple(y.shape)} (lengths must match)"
        )
    if x.shape[0] == 0:
        raise RobustlabError("cannot compute accuracy on zero images")
    pred = predict(model, x, batch_size, device, progress, desc="clean accuracy")
    return float((pred == y.cpu().long()).double().mean())
