"""Batched entropic optimal transport with uniform marginals, in the log domain.

The spec's iteration (`u = a / (K v); v = c / (K^T u)`, K = exp(-C / lambda)) underflows in fp32 as soon as
C / lambda exceeds ~87, i.e. for small epsilon. The same iteration in log space is exact and stable.
Samples of one batch have different lengths: invalid rows and columns get a large negative finite
log-kernel value rather than -inf, so that no logsumexp ever sees an all -inf row (whose gradient is NaN),
and the plan is exactly 0 there.
"""

from __future__ import annotations

import torch
from torch import Tensor


def sinkhorn_plan(
    cost: Tensor,
    row_mask: Tensor,
    col_mask: Tensor,
    epsilon: float,
    iterations: int,
    detach_plan: bool = False,
) -> Tensor:
    """Transport plan P (B, n, m) for `cost` (B, n, m) with uniform marginals over the valid rows/columns.

    Row b's marginals are a = 1 / n_b on its `row_mask` entries and c = 1 / m_b on its `col_mask` entries;
    the iteration starts from v = 1 and runs `iterations` times, as in the spec. With `detach_plan` the plan
    is computed without gradient (the usual treatment of converged Sinkhorn); otherwise autograd
    differentiates the unrolled iterations.
    """
    if epsilon <= 0:
        raise ValueError(f"sinkhorn_epsilon must be > 0, got {epsilon}")
    if iterations < 1:
        raise ValueError(f"sinkhorn_iters must be >= 1, got {iterations}")
    with torch.set_grad_enabled(torch.is_grad_enabled() and not detach_plan):
        dtype = cost.dtype
        valid = row_mask.unsqueeze(2) & col_mask.unsqueeze(1)
        # Valid log-kernel values are >= -max(C) / epsilon; stay far below that on invalid entries.
        floor = -(float(cost.detach().abs().max()) / epsilon + 1e4) if cost.numel() else -1e4
        log_k = torch.where(valid, -cost / epsilon, torch.full_like(cost, floor))
        n_rows = row_mask.sum(dim=1, keepdim=True).clamp(min=1).to(dtype)
        n_cols = col_mask.sum(dim=1, keepdim=True).clamp(min=1).to(dtype)
        log_a = torch.where(row_mask, -torch.log(n_rows), torch.full_like(n_rows, floor))
        log_c = torch.where(col_mask, -torch.log(n_cols), torch.full_like(n_cols, floor))
        log_v = torch.zeros_like(log_c)
        log_u = torch.zeros_like(log_a)
        for _ in range(iterations):
            log_u = log_a - torch.logsumexp(log_k + log_v.unsqueeze(1), dim=2)
            log_v = log_c - torch.logsumexp(log_k + log_u.unsqueeze(2), dim=1)
        plan = torch.exp(log_u.unsqueeze(2) + log_k + log_v.unsqueeze(1))
        return torch.where(valid, plan, torch.zeros_like(plan))
