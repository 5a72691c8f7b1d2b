"""MultiLevelOTLoss against the float64 reference, gradients, invariances, the cache path and edge cases."""

from __future__ import annotations

import pytest
import torch

from otdistill.losses import MultiLevelOTLoss, TeacherTopK
from tests.losses import reference
from tests.losses.random_inputs import prefix_mask, random_pair

PARTS = ("loss", "had", "sl", "sd")


def values(out: object) -> dict[str, float]:
    return {p: float(getattr(out, p).detach()) for p in PARTS}


def assert_matches(out: object, ref: dict[str, float], rtol: float = 1e-5) -> None:
    got = values(out)
    for part in PARTS:
        assert got[part] == pytest.approx(ref[part], rel=rtol, abs=1e-7), part


@pytest.mark.parametrize(
    ("seed", "lengths_s", "lengths_t", "ls", "lt", "vs", "vt", "k"),
    [
        (0, [7, 3, 5], [9, 6, 2], 7, 9, 40, 60, 10),
        (1, [12, 12], [5, 10], 12, 10, 90, 70, 50),
        (2, [4, 1, 6, 6], [3, 8, 8, 1], 6, 8, 33, 101, 7),
    ],
)
def test_matches_float64_reference(
    seed: int, lengths_s: list[int], lengths_t: list[int], ls: int, lt: int, vs: int, vt: int, k: int
) -> None:
    s, t, sm, tm = random_pair(seed, lengths_s, lengths_t, ls, lt, vs, vt)
    out = MultiLevelOTLoss(top_k=k)(s, t, sm, tm)
    assert_matches(out, reference.multilevel_ot(s, t, sm, tm, k=k))
    assert out.loss.dtype == torch.float32


def test_non_default_parameters_match_reference() -> None:
    s, t, sm, tm = random_pair(3, [6, 4], [5, 7], 6, 7, 30, 45)
    params = dict(k=12, tau=1.7, tau_sd=3.0, eps=0.05, iters=35, alpha=0.4, beta=0.3, gamma=0.2)
    fn = MultiLevelOTLoss(
        top_k=12,
        temperature=1.7,
        sinkhorn_temperature=3.0,
        sinkhorn_epsilon=0.05,
        sinkhorn_iters=35,
        alpha=0.4,
        beta=0.3,
        gamma=0.2,
    )
    assert_matches(fn(s, t, sm, tm), reference.multilevel_ot(s, t, sm, tm, **params))  # type: ignore[arg-type]


def test_defaults_are_the_papers() -> None:
    fn = MultiLevelOTLoss()
    assert (fn.top_k, fn.temperature, fn.sinkhorn_temperature, fn.sinkhorn_epsilon, fn.sinkhorn_iters) == (
        50,
        1.0,
        2.0,
        0.1,
        20,
    )
    assert (fn.alpha, fn.beta, fn.gamma) == (0.15, 0.1, 0.1)


def test_gradcheck() -> None:
    s, t, sm, tm = random_pair(4, [3, 2], [4, 1], 3, 4, 6, 7, scale=1.0, dtype=torch.float64)
    s.requires_grad_(True)
    fn = MultiLevelOTLoss(top_k=3)
    assert torch.autograd.gradcheck(lambda x: fn(x, t, sm, tm).loss, (s,), eps=1e-6, atol=1e-5)


def test_detached_plan_keeps_values_and_differs_only_in_the_sd_gradient() -> None:
    s, t, sm, tm = random_pair(4, [5, 2], [4, 6], 5, 6, 20, 25)
    s.requires_grad_(True)
    unrolled = MultiLevelOTLoss(top_k=6)(s, t, sm, tm)
    detached = MultiLevelOTLoss(top_k=6, detach_plan=True)(s, t, sm, tm)
    assert values(unrolled) == pytest.approx(values(detached), rel=1e-6)
    (g_unrolled,) = torch.autograd.grad(unrolled.had, s)
    (g_detached,) = torch.autograd.grad(detached.had, s, retain_graph=True)
    assert torch.equal(g_unrolled, g_detached)
    (g_sd,) = torch.autograd.grad(detached.sd, s)
    assert torch.isfinite(g_sd).all() and g_sd.abs().sum() > 0


def test_gradient_reaches_student_logits_from_every_part() -> None:
    s, t, sm, tm = random_pair(5, [5, 3], [4, 6], 5, 6, 20, 25)
    s.requires_grad_(True)
    out = MultiLevelOTLoss(top_k=5)(s, t, sm, tm)
    for part in ("had", "sl", "sd"):
        (grad,) = torch.autograd.grad(getattr(out, part), s, retain_graph=True)
        assert torch.isfinite(grad).all()
        assert grad.abs().sum() > 0, part
        # padded student positions get no gradient
        assert grad[1, 3:].abs().sum() == 0


def test_permuting_teacher_vocabulary_changes_nothing() -> None:
    s, t, sm, tm = random_pair(6, [6, 4], [5, 7], 6, 7, 30, 45)
    perm = torch.randperm(45, generator=torch.Generator().manual_seed(0))
    fn = MultiLevelOTLoss(top_k=10)
    a, b = values(fn(s, t, sm, tm)), values(fn(s, t[..., perm], sm, tm))
    for part in PARTS:
        assert a[part] == pytest.approx(b[part], rel=1e-6), part


def test_identical_distributions_give_zero_had() -> None:
    s, _, sm, _ = random_pair(7, [5, 3], [5, 3], 5, 5, 40, 40)
    out = MultiLevelOTLoss(top_k=10)(s, s.clone(), sm, sm.clone())
    assert float(out.had) == 0.0
    # SL is then the cross-entropy of the truncated distribution with itself: positive
    assert float(out.sl) > 0


def test_k_larger_than_either_vocabulary_uses_the_smaller() -> None:
    s, t, sm, tm = random_pair(8, [4, 2], [3, 5], 4, 5, 12, 17)
    out = MultiLevelOTLoss(top_k=1000)(s, t, sm, tm)
    assert_matches(out, reference.multilevel_ot(s, t, sm, tm, k=12))


def test_length_one() -> None:
    s, t, sm, tm = random_pair(9, [1], [1], 1, 1, 20, 30)
    out = MultiLevelOTLoss(top_k=5)(s, t, sm, tm)
    assert_matches(out, reference.multilevel_ot(s, t, sm, tm, k=5))


def test_empty_row_contributes_nothing() -> None:
    s, t, sm, tm = random_pair(10, [5, 0, 3], [4, 6, 0], 5, 6, 20, 25)
    fn = MultiLevelOTLoss(top_k=6)
    full = values(fn(s, t, sm, tm))
    only_first = values(fn(s[:1], t[:1], sm[:1], tm[:1]))
    for part in PARTS:
        assert full[part] == pytest.approx(only_first[part], rel=1e-6), part


def test_all_empty_batch_is_zero_with_a_gradient_path() -> None:
    s, t, _, _ = random_pair(11, [0, 0], [0, 0], 4, 5, 20, 25)
    s.requires_grad_(True)
    sm = torch.zeros(2, 4, dtype=torch.bool)
    tm = torch.zeros(2, 5, dtype=torch.bool)
    out = MultiLevelOTLoss(top_k=6)(s, t, sm, tm)
    assert values(out) == {p: 0.0 for p in PARTS}
    out.loss.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() == 0


def test_half_precision_logits_are_computed_in_fp32() -> None:
    s, t, sm, tm = random_pair(12, [6, 4], [5, 7], 6, 7, 30, 45)
    fn = MultiLevelOTLoss(top_k=10)
    for dtype in (torch.bfloat16, torch.float16):
        out = fn(s.to(dtype), t.to(dtype), sm, tm)
        assert out.loss.dtype == torch.float32
        ref = reference.multilevel_ot(s.to(dtype), t.to(dtype), sm, tm, k=10)
        assert_matches(out, ref, rtol=1e-4)


def test_small_epsilon_is_finite() -> None:
    s, t, sm, tm = random_pair(13, [6, 4], [5, 7], 6, 7, 30, 45)
    s.requires_grad_(True)
    out = MultiLevelOTLoss(top_k=10, sinkhorn_epsilon=1e-4, sinkhorn_iters=200)(s, t, sm, tm)
    out.loss.backward()
    assert torch.isfinite(out.sd) and float(out.sd) > 0
    assert s.grad is not None and torch.isfinite(s.grad).all()


def test_cached_teacher_topk_gives_the_same_loss() -> None:
    s, t, sm, tm = random_pair(14, [6, 4], [5, 7], 6, 7, 30, 45)
    fn = MultiLevelOTLoss(top_k=10)
    live = values(fn(s, t, sm, tm))
    for cache_k in (10, 25):
        cached = fn.teacher_topk(t, tm, k=cache_k)
        assert isinstance(cached, TeacherTopK) and cached.k == cache_k
        got = values(fn(s, cached, sm, tm))
        for part in PARTS:
            assert got[part] == pytest.approx(live[part], rel=1e-6), part


def test_cached_teacher_with_wrong_settings_is_refused() -> None:
    s, t, sm, tm = random_pair(15, [6, 4], [5, 7], 6, 7, 30, 45)
    small = MultiLevelOTLoss(top_k=5).teacher_topk(t, tm)
    with pytest.raises(ValueError, match="k=5 columns, the loss needs 10"):
        MultiLevelOTLoss(top_k=10)(s, small, sm, tm)
    hot = MultiLevelOTLoss(top_k=10, sinkhorn_temperature=4.0).teacher_topk(t, tm)
    with pytest.raises(ValueError, match="temperatures"):
        MultiLevelOTLoss(top_k=10)(s, hot, sm, tm)


def test_bad_inputs_raise_value_errors_that_name_the_problem() -> None:
    s, t, sm, tm = random_pair(16, [3, 2], [4, 1], 3, 4, 6, 7)
    fn = MultiLevelOTLoss(top_k=3)
    with pytest.raises(ValueError, match=r"student_logits must have shape \(B, L, V\)"):
        fn(s[0], t, sm, tm)
    with pytest.raises(ValueError, match="batch sizes differ"):
        fn(s, t[:1], sm, tm[:1])
    with pytest.raises(ValueError, match="teacher_mask must have shape"):
        fn(s, t, sm, tm[:, :3])
    holes = prefix_mask([3, 2], 3)
    holes[1] = torch.tensor([True, False, True])
    with pytest.raises(ValueError, match=r"student_mask must be a prefix.*rows \[1\]"):
        fn(s, t, holes, tm)
    with pytest.raises(ValueError, match="boolean"):
        fn(s, t, sm.float() * 0.5, tm)


def test_streaming_in_small_blocks_gives_the_same_values_and_gradients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import otdistill.losses.streamed as streamed

    s, t, sm, tm = random_pair(17, [6, 4, 0], [5, 7, 3], 6, 7, 30, 45)
    fn = MultiLevelOTLoss(top_k=10)

    def run() -> tuple[dict[str, float], torch.Tensor]:
        x = s.clone().requires_grad_(True)
        out = fn(x, t, sm, tm)
        out.loss.backward()
        assert x.grad is not None
        return values(out), x.grad

    whole, whole_grad = run()
    monkeypatch.setattr(streamed, "BLOCK_ELEMENTS", 64)  # two rows per block at these vocabularies
    blocked, blocked_grad = run()
    assert blocked == pytest.approx(whole, rel=1e-6)
    assert torch.allclose(blocked_grad, whole_grad, atol=1e-7)
