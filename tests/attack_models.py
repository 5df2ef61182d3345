"""Small models shared by the attack tests (FAB, Square, margins): an exact float64 linear
classifier and a BatchNorm + dropout CNN that records the modes it is called in."""

from __future__ import annotations

import torch
from torch import nn


def linear_model(d: int, k: int, seed: int = 0) -> nn.Linear:
    """A linear classifier in float64 (margins are exact to ~1e-12, not float32's ~1e-7)."""
    g = torch.Generator().manual_seed(seed)
    m = nn.Linear(d, k, dtype=torch.float64)
    with torch.no_grad():
        m.weight.copy_(torch.randn(k, d, generator=g, dtype=torch.float64))
        # logits near zero around x = 0.5: small margins, so the box stays inactive there
        m.bias.copy_(
            -0.5 * m.weight.sum(1) + 0.1 * torch.randn(k, generator=g, dtype=torch.float64)
        )
    return m.eval()


class BNNet(nn.Module):
    """Conv + BatchNorm + dropout on 8x8 inputs, 5 classes; ``modes`` logs ``training`` per call."""

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4 * 8 * 8, 5)
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)  # an attack must run the model in eval mode
        return self.fc(self.drop(torch.relu(self.bn(self.conv(x)))).flatten(1))
