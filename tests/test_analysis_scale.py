"""Per-sample cross-class KL and logit-scale normalization (robustlab.analysis.scale)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlab.analysis.fisher import fisher_summary, kl_divergence
from robustlab.analysis.scale import (
    LogitScaled,
    cross_class_kl_per_sample,
    logit_scale,
    logits_of,
)
from robustlab.errors import RobustlabError


def test_per_sample_cross_class_kl_equals_a_loop() -> None:
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(9, 4, generator=g) * 3, torch.tensor([0, 1, 2, 0, 1, 2, 3, 3, 0])
    got = cross_class_kl_per_sample(z, y)
    for i in range(9):
        js = [j for j in range(9) if y[j] != y[i]]
        want = torch.stack([kl_divergence(z[i : i + 1], z[j : j + 1])[0] for j in js]).mean()
        torch.testing.assert_close(got[i], want)
    with pytest.raises(RobustlabError, match="another class"):
        cross_class_kl_per_sample(z[:2], torch.tensor([1, 1]))


def test_unit_scaled_model_has_logit_std_one_and_smaller_fisher() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5)).double()
    with torch.no_grad():
        model[1].weight.mul_(10)  # large logits
    x = torch.rand(16, 1, 3, 4, dtype=torch.float64)
    unit = LogitScaled.unit(model, x)
    assert unit.scale > 1
    assert logit_scale(logits_of(unit, x)) == pytest.approx(1.0)
    torch.testing.assert_close(unit(x).argmax(1), model(x).argmax(1))  # same classifier
    assert (fisher_summary(unit, x)["fisher_fro"] < fisher_summary(model, x)["fisher_fro"]).all()
    with pytest.raises(RobustlabError, match="positive"):
        LogitScaled(model, 0.0)
