"""The batched log-domain Sinkhorn plan: marginals, masking, stability."""

from __future__ import annotations

import torch

from otdistill.losses import sinkhorn_plan
from tests.losses.random_inputs import prefix_mask


def test_marginals_and_masking() -> None:
    gen = torch.Generator().manual_seed(0)
    cost = torch.rand(3, 5, 6, generator=gen, dtype=torch.float64)
    rows, cols = prefix_mask([5, 2, 0], 5), prefix_mask([6, 4, 3], 6)
    plan = sinkhorn_plan(cost, rows, cols, epsilon=0.5, iterations=200)
    # after the last v-update the column marginals are exact; rows converge
    assert torch.allclose(plan[0].sum(0), torch.full((6,), 1 / 6, dtype=torch.float64))
    assert torch.allclose(plan[0].sum(1), torch.full((5,), 1 / 5, dtype=torch.float64), atol=1e-8)
    assert torch.allclose(plan[1, :2, :4].sum(0), torch.full((4,), 1 / 4, dtype=torch.float64))
    assert plan[1, 2:].abs().sum() == 0 and plan[1, :, 4:].abs().sum() == 0
    assert plan[2].abs().sum() == 0


def test_small_epsilon_concentrates_on_the_optimal_assignment() -> None:
    # the identity is the unique optimal assignment of this cost; exp(-1/1e-3) underflows without log domain
    cost = (1.0 - torch.eye(4)).unsqueeze(0)
    mask = torch.ones(1, 4, dtype=torch.bool)
    plan = sinkhorn_plan(cost, mask, mask, epsilon=1e-3, iterations=20)
    assert torch.isfinite(plan).all()
    assert torch.allclose(plan[0], torch.eye(4) / 4, atol=1e-6)
