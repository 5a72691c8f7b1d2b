"""ULDLoss against the float64 reference, and the documented approximation of the top-K cache path."""

from __future__ import annotations

import pytest
import torch

from otdistill.losses import ULDLoss, teacher_sorted_probs
from tests.losses import reference
from tests.losses.random_inputs import random_pair


@pytest.mark.parametrize(("vs", "vt"), [(40, 60), (70, 30)])
def test_matches_float64_reference(vs: int, vt: int) -> None:
    s, t, sm, tm = random_pair(20, [7, 3, 0], [9, 6, 2], 7, 9, vs, vt)
    out = ULDLoss(weight=0.15)(s, t, sm, tm)
    ref = reference.uld(s, t, sm, tm, weight=0.15)
    assert float(out.uld) == pytest.approx(ref["uld"], rel=1e-5)
    assert float(out.loss) == pytest.approx(ref["loss"], rel=1e-5)


def test_gradcheck() -> None:
    s, t, sm, tm = random_pair(21, [3, 2], [4, 1], 3, 4, 6, 9, scale=1.0, dtype=torch.float64)
    s.requires_grad_(True)
    fn = ULDLoss()
    assert torch.autograd.gradcheck(lambda x: fn(x, t, sm, tm).loss, (s,), eps=1e-6, atol=1e-5)


def test_full_sorted_cache_is_exact_and_top_k_cache_within_tail_mass() -> None:
    s, t, sm, tm = random_pair(22, [7, 3], [9, 6], 7, 9, 40, 60, scale=2.0)
    fn = ULDLoss()
    exact = float(fn(s, t, sm, tm).uld)
    assert float(fn(s, teacher_sorted_probs(t), sm, tm).uld) == pytest.approx(exact, rel=1e-6)
    for top in (5, 20):
        cached = teacher_sorted_probs(t, top)
        approx = float(fn(s, cached, sm, tm).uld)
        full = torch.sort(torch.softmax(t, -1), -1, descending=True).values
        tail = full[..., top:].sum(-1)  # teacher tail mass per position
        aligned = [(b, i) for b in range(2) for i in range(min(int(sm[b].sum()), int(tm[b].sum())))]
        bound = sum(float(tail[b, i]) for b, i in aligned) / len(aligned)
        assert abs(approx - exact) <= bound + 1e-6
        assert approx != pytest.approx(exact, rel=1e-9)  # it is an approximation, and the test sees it


def test_all_empty_batch_is_zero_with_a_gradient_path() -> None:
    s, t, _, _ = random_pair(23, [0], [0], 3, 4, 10, 12)
    s.requires_grad_(True)
    out = ULDLoss()(s, t, torch.zeros(1, 3, dtype=torch.bool), torch.zeros(1, 4, dtype=torch.bool))
    assert float(out.loss) == 0.0
    out.loss.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()
