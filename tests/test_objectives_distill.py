"""Teacher-logit manipulations and the distillation objective (teacher cache, class check)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.data import DatasetInfo, Split
from robustlab.errors import ConfigError, RobustlabError
from robustlab.objectives import StepState, create_objective
from robustlab.objectives import manipulations as M


def logits(n: int = 200, k: int = 10, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k, generator=g, dtype=torch.float64) * 3
    z[torch.arange(n), torch.randint(0, k, (n,), generator=g)] += 6  # a clear top-1
    return z


def gen(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ranks(z: torch.Tensor) -> torch.Tensor:
    return z.argsort(dim=1)


def keeps_order(out: torch.Tensor, z: torch.Tensor) -> bool:
    """``out`` is non-decreasing along ``z``'s ascending class order (ties allowed)."""
    along = out.gather(1, ranks(z))
    return bool((along[:, 1:] >= along[:, :-1]).all())


@pytest.mark.parametrize("name", ["shuffle", "mean", "sorted_resample", "conf_swap", "std_order"])
def test_every_manipulation_keeps_argmax_and_max(name: str) -> None:
    z = logits()
    out = M.manipulate(name, z, gen(), z_std=logits(seed=7))
    assert out.shape == z.shape and torch.isfinite(out).all()
    assert torch.equal(out.argmax(1), z.argmax(1))
    torch.testing.assert_close(out.amax(1), z.amax(1), rtol=0, atol=0)
    assert not torch.equal(out, z)  # each manipulation does change something


def test_shuffle_keeps_multiset_and_moves_classes() -> None:
    z = logits()
    out = M.shuffle(z, gen())
    torch.testing.assert_close(out.sort(1).values, z.sort(1).values, rtol=0, atol=0)
    assert (out != z).any(1).float().mean() > 0.9
    assert torch.equal(M.shuffle(z, gen(3)), M.shuffle(z, gen(3)))


def test_mean_equalizes_the_non_max_logits() -> None:
    z = logits()
    out = M.mean(z)
    rest = M.non_max_values(out)
    torch.testing.assert_close(rest.amax(1), rest.amin(1))
    torch.testing.assert_close(rest[:, 0], M.non_max_values(z).mean(1))


def test_sorted_resample_keeps_class_order_and_draws_from_the_pool() -> None:
    z = logits()
    out = M.sorted_resample(z, gen())
    assert keeps_order(out, z)  # values drawn with replacement may tie
    pool = set(M.non_max_values(z).reshape(-1).tolist())
    assert set(M.non_max_values(out).reshape(-1).tolist()) <= pool
    assert not torch.equal(M.non_max_values(out), M.non_max_values(z))


def test_conf_swap_keeps_order_and_takes_other_gaps() -> None:
    z = logits()
    out = M.conf_swap(z, gen())
    assert torch.equal(ranks(out), ranks(z))
    gaps = M.top2_gap(z)
    new = M.top2_gap(out)
    # every new gap is one of the original gaps
    assert torch.isclose(new[:, None], gaps[None, :], rtol=1e-9, atol=1e-9).any(1).all()
    assert not torch.allclose(new, gaps)


def test_std_order_follows_the_standard_teachers_ranking() -> None:
    z, zs = logits(), logits(seed=5)
    out = M.std_order(z, zs)
    top = z.argmax(1, keepdim=True)
    rest_out = out.scatter(1, top, float("inf"))
    rest_std = zs.scatter(1, top, float("inf"))
    assert torch.equal(ranks(rest_out), ranks(rest_std))
    torch.testing.assert_close(M.non_max_values(out), M.non_max_values(z))


# -- the distillation objective --------------------------------------------------------------


def make_split(n: int = 48, k: int = 10, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, k, (n,), generator=g)
    info = DatasetInfo("toy", k, (1, 8, 8), (0.5,), (0.25,), False)
    return Split(images, labels, info)


def net(k: int = 10, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, k))


def test_teacher_with_other_class_count_is_a_config_error() -> None:
    obj = create_objective("distill", teacher=net(k=5))
    with pytest.raises(ConfigError, match="teacher outputs 5 classes but the training data has 10"):
        obj.setup(net(), make_split(), "cpu")


def test_distill_loss_uses_cached_teacher_logits_per_index() -> None:
    split, teacher, student = make_split(), net(seed=1), net(seed=2)
    obj = create_objective("distill", teacher=teacher, tau=3.0, alpha=0.7)
    obj.setup(student, split, "cpu")
    idx = torch.tensor([5, 0, 17, 40])
    x, y = split.images[idx].float() / 255, split.labels[idx]
    with torch.no_grad():
        zt = teacher(x)
    loss, logs = obj(student, x, y, idx, StepState(raw_model=student))
    zs = student(x)
    kl = 9 * F.kl_div(
        F.log_softmax(zs / 3, 1), F.log_softmax(zt / 3, 1), log_target=True, reduction="batchmean"
    )
    ref = 0.7 * kl + 0.3 * F.cross_entropy(zs, y)
    torch.testing.assert_close(loss, ref)
    for name in ("full_kl", "brief"):  # "brief": the older name of full_kl
        full = create_objective("distill", teacher=teacher, tau=3.0, alpha=0.7, weighting=name)
        assert full.weighting == "full_kl"
        full.setup(student, split, "cpu")
        loss_b, _ = full(student, x, y, idx, StepState(raw_model=student))
        torch.testing.assert_close(loss_b, kl + 0.3 * F.cross_entropy(zs, y))
    with pytest.raises(ConfigError, match="weighting.*convex.*full_kl"):
        create_objective("distill", teacher=teacher, weighting="brief-b")


def test_hard_labels_reference_is_cross_entropy() -> None:
    split, student = make_split(), net()
    obj = create_objective("distill", manipulation="hard_labels")
    obj.setup(student, split, "cpu")
    x, y = split.images[:8].float() / 255, split.labels[:8]
    loss, _ = obj(student, x, y, torch.arange(8), StepState(raw_model=student))
    torch.testing.assert_close(loss, F.cross_entropy(student(x), y))


def test_manipulation_fixed_per_index_unless_redraw() -> None:
    split, teacher = make_split(), net(seed=1)
    idx = torch.arange(10)
    fixed = create_objective("distill", teacher=teacher, manipulation="shuffle", seed=4)
    fixed.setup(net(), split, "cpu")
    a = fixed.teacher_targets(idx, gen(1))
    b = fixed.teacher_targets(idx, gen(2))
    assert torch.equal(a, b)
    redraw = create_objective("distill", teacher=teacher, manipulation="shuffle", redraw=True)
    redraw.setup(net(), split, "cpu")
    c = redraw.teacher_targets(idx, gen(1))
    d = redraw.teacher_targets(idx, gen(2))
    assert not torch.equal(c, d)
    assert torch.equal(c.argmax(1), a.argmax(1))


def test_std_order_and_standard_teacher_need_the_second_teacher() -> None:
    split, at, std = make_split(), net(seed=1), net(seed=3)
    with pytest.raises(ConfigError, match="needs std_teacher"):
        create_objective("distill", teacher=at, manipulation="std_order")
    obj = create_objective("distill", teacher=at, std_teacher=std, manipulation="std_order")
    obj.setup(net(), split, "cpu")
    t = obj.teacher_targets(torch.arange(len(split)))
    x = split.images.float() / 255
    with torch.no_grad():
        torch.testing.assert_close(t, M.std_order(at(x), std(x)))
    ref = create_objective("distill", std_teacher=std, manipulation="standard_teacher")
    ref.setup(net(), split, "cpu")
    with torch.no_grad():
        torch.testing.assert_close(ref.teacher_targets(torch.arange(len(split))), std(x))


def test_distill_without_setup_is_a_clear_error() -> None:
    obj = create_objective("distill", teacher=net())
    with pytest.raises(RobustlabError, match="call setup"):
        obj.teacher_targets(torch.arange(3))


def test_teacher_from_checkpoint_path(tmp_path, trades_checkpoint, shared_data) -> None:
    from robustlab.data import load_split

    test = load_split("mnist", "test", root=shared_data)
    split = test.subset(torch.arange(32))
    obj = create_objective("distill", teacher=str(trades_checkpoint), teacher_model="smallcnn")
    obj.setup(net(), split, "cpu")
    t = obj.teacher_targets(torch.arange(32))
    assert (t.argmax(1) == split.labels).float().mean() > 0.9  # the real robust teacher
    with pytest.raises(ConfigError, match="teacher_model"):
        create_objective("distill", teacher=str(trades_checkpoint))


def test_teacher_view_augmented_uses_the_students_batch() -> None:
    """teacher_view=augmented: the teacher's logits come from the batch the student sees (here
    a flipped view), not from the clean cache; the default keeps the clean cached view."""
    split, teacher, student = make_split(), net(seed=1), net(seed=2)
    idx = torch.tensor([3, 9, 30])
    x_clean, y = split.images[idx].float() / 255, split.labels[idx]
    x_view = x_clean.flip(3)  # the "augmented" view the loader would give
    with torch.no_grad():
        z_view, z_clean = teacher(x_view), teacher(x_clean)
    assert not torch.allclose(z_view, z_clean)
    zs = student(x_view)
    expect = {}
    for view, zt in (("augmented", z_view), ("clean", z_clean)):
        expect[view], _ = M_loss(zs, zt, y)
        obj = create_objective("distill", teacher=teacher, tau=2.0, teacher_view=view)
        obj.setup(student, split, "cpu")
        loss, logs = obj(student, x_view, y, idx, StepState(raw_model=student))
        torch.testing.assert_close(loss, expect[view])
        assert all(p.grad is None for p in teacher.parameters())
    assert not torch.allclose(expect["augmented"], expect["clean"])
    # random manipulations on the augmented view: drawn per batch, argmax and max kept
    obj = create_objective(
        "distill", teacher=teacher, manipulation="shuffle", teacher_view="augmented"
    )
    obj.setup(student, split, "cpu")
    zt = obj.view_targets(x_view, gen(2))
    assert torch.equal(zt.argmax(1), z_view.argmax(1))
    with pytest.raises(ConfigError, match="teacher_view"):
        create_objective("distill", teacher=teacher, teacher_view="noisy")


def M_loss(zs: torch.Tensor, zt: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict]:
    from robustlab.objectives.distill import distill_loss

    return distill_loss(zs, zt, y, tau=2.0, alpha=1.0, weighting="convex")
