"""FAB-T counts any misclassification of an iterate as a success, as the reference AutoAttack
(``fab_base.py``: ``is_adv = pred != y``): a point pushed towards an unreachable target that
lands in a third class is adversarial."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from robustlab.attacks import create_attack, make_threat
from robustlab.attacks.boundary import boundary_search


class ThirdClass(nn.Module):
    """Three classes on images (N, 1, 1, 2) of which only the first pixel matters, u = x - 0.5:
    z_0 = 0 (the label), z_1 = 10u - 1 - 50u^2 (the first target by clean logit; it never
    exceeds z_0, so it is unreachable) and z_2 = 20u - 1.5 (below z_1 at the clean point, above
    z_0 from u = 0.075). FAB-T towards class 1 linearises z_0 - z_1 and steps to u ~ 0.105,
    where z_1 < z_0 < z_2: a targeted iterate misclassified into the third class."""

    def forward(self, x: Tensor) -> Tensor:
        u = x.flatten(1)[:, :1] - 0.5
        return torch.cat([torch.zeros_like(u), 10 * u - 1 - 50 * u**2, 20 * u - 1.5], dim=1)


def inputs() -> tuple[Tensor, Tensor]:
    x = torch.full((2, 1, 1, 2), 0.5, dtype=torch.float64)
    x[1, 0, 0, 1] = 0.3  # the second pixel plays no role
    return x, torch.zeros(2, dtype=torch.long)


def test_targeted_search_succeeds_in_a_third_class() -> None:
    model, (x, y) = ThirdClass(), inputs()
    with torch.no_grad():
        clean = model(x)
    assert bool((clean.argmax(1) == 0).all()) and bool((clean[:, 1] > clean[:, 2]).all())
    t, threat = torch.ones(2, dtype=torch.long), make_threat("linf", 0.3)
    plain = boundary_search(model, x, y, None, threat, steps=20, targeted_class=t)
    assert not bool(plain.found.any())  # the z_0 = z_1 boundary itself is out of reach
    res = boundary_search(
        model, x, y, None, threat, steps=20, targeted_class=t, any_misclassification=True
    )
    assert bool(res.found.all())
    with torch.no_grad():
        z = model(res.x_boundary)
    assert bool((z.argmax(1) == 2).all())  # misclassified, into the third class
    assert bool((z[:, 0] > z[:, 1]).all())  # still on the clean side of the target's boundary
    assert bool((res.distance <= 0.3).all()) and bool((res.phi_value < 0).all())


def test_fab_t_breaks_the_point_through_a_third_class() -> None:
    model, (x, y) = ThirdClass(), inputs()
    attack = create_attack("fab-t", eps=0.2, norm="linf", n_target_classes=1, steps=20, seed=0)
    x_adv = attack(model, x, y)
    with torch.no_grad():
        pred = model(x_adv).argmax(1)
    assert bool((pred == 2).all())  # only class 1 was targeted; class 2 broke it
    assert float((x_adv - x).abs().amax()) <= 0.2 + 1e-12


def test_reference_fab_t_also_breaks_it_through_the_third_class(shared_root: Path) -> None:
    """The reference AutoAttack's FAB-T (a392200, installed by make setup) on the same model and
    target: it too returns a point of the third class, within eps."""
    from autoattack.fab_pt import FABAttack_PT  # make setup installs it where ../shared is

    model, (x, y) = ThirdClass(), inputs()
    ref = FABAttack_PT(
        model, n_restarts=1, n_iter=20, eps=0.2, norm="Linf", targeted=True,
        n_target_classes=1, device="cpu", seed=0,
    )  # fmt: skip
    ref.target_class = 2  # the reference's index: the second-highest clean logit, class 1
    x_ref = ref.perturb(x.float(), y)
    with torch.no_grad():
        assert model(x_ref.double()).argmax(1).tolist() == [2, 2]
    assert float((x_ref.double() - x).abs().amax()) <= 0.2 + 1e-6  # the reference is float32
