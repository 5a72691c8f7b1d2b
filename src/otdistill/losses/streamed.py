"""Full-vocabulary softmax statistics and top-k gathers, streamed over blocks of rows.

MultiLevelOT needs, per side, the log-normaliser at two temperatures, the per-sequence ranking (a sum of
softmax rows over valid positions), and the log-probabilities at k ranked ids; the gradient only needs those
too. Done naively in PyTorch that is several (B, L, V) temporaries per side (softmax, scaled copies, the
backward of two logsumexps and two gathers), and at V = 262,144 their allocation dominates the time. Here
each side makes one pass over its logits in blocks of rows of bounded size (each block is a vectorised
operation over many tokens; the loop is over memory blocks, not over samples or tokens), and the backward
writes the single (B, L, V) gradient it must return, recomputing probabilities block by block.

With tau_sd = 2 * tau (the paper's 1.0 and 2.0) the second temperature costs a square root, not an exp:
exp((x - m) / tau_sd) = sqrt(exp((x - m) / tau)).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

BLOCK_ELEMENTS = 1 << 20  # 1M values (4 MiB in fp32) per block: stays in cache across a block's passes


def _blocks(rows: int, vocab: int) -> Iterator[slice]:
    step = max(1, BLOCK_ELEMENTS // max(vocab, 1))
    for start in range(0, rows, step):
        yield slice(start, min(rows, start + step))


def _second_power(e1: Tensor, ratio: float) -> Tensor:
    """exp(z * ratio) from e1 = exp(z), in place; ratio = tau / tau_sd."""
    return e1.sqrt_() if ratio == 0.5 else e1.pow_(ratio)


@torch.no_grad()
def softmax_stats(
    logits: Tensor, mask: Tensor, tau: float, tau_sd: float, dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor]:
    """(lse (B, L) at tau, lse_sd (B, L) at tau_sd, ranking sums (B, V) of softmax at tau over valid rows)."""
    batch, length, vocab = logits.shape
    flat = logits.reshape(batch * length, vocab)
    weights = mask.reshape(-1).to(dtype)
    sample = torch.arange(batch, device=logits.device).repeat_interleave(length)
    lse = torch.empty(batch * length, dtype=dtype, device=logits.device)
    lse_sd = torch.empty_like(lse)
    sums = torch.zeros(batch, vocab, dtype=dtype, device=logits.device)
    ratio = tau / tau_sd
    for rows in _blocks(batch * length, vocab):
        z = flat[rows].to(dtype)
        if tau != 1.0:
            z = z / tau
        peak = z.amax(dim=-1, keepdim=True)
        e = (z - peak).exp_()
        total = e.sum(-1, keepdim=True)
        lse[rows] = (peak + total.log()).squeeze(-1)
        sums.index_add_(0, sample[rows], e * (weights[rows].unsqueeze(-1) / total))
        e = _second_power(e, ratio)
        lse_sd[rows] = (peak * ratio + e.sum(-1, keepdim=True).log()).squeeze(-1)
    return lse.view(batch, length), lse_sd.view(batch, length), sums


class GatheredLogProbs(torch.autograd.Function):
    """log softmax(x / tau) and log softmax(x / tau_sd) at `indices` (B, k), each (B, L, k).

    `lse` and `lse_sd` come from `softmax_stats` of the same logits; the backward accounts for their
    dependence on x analytically: d/dx (x_j / tau - lse(x)) = (onehot_j - softmax(x / tau)) / tau.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        logits: Tensor,
        indices: Tensor,
        lse: Tensor,
        lse_sd: Tensor,
        tau: float,
        tau_sd: float,
    ) -> tuple[Tensor, Tensor]:
        dtype = lse.dtype
        idx = indices.unsqueeze(1).expand(-1, logits.shape[1], -1)
        picked = logits.gather(-1, idx).to(dtype)
        ctx.save_for_backward(logits, idx, lse, lse_sd)
        ctx.temperatures = (tau, tau_sd)  # type: ignore[attr-defined]
        return picked / tau - lse.unsqueeze(-1), picked / tau_sd - lse_sd.unsqueeze(-1)

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: Tensor, grad_sd: Tensor
    ) -> tuple[Tensor | None, ...]:
        logits, idx, lse, lse_sd = ctx.saved_tensors  # type: ignore[attr-defined]
        tau, tau_sd = ctx.temperatures  # type: ignore[attr-defined]
        batch, length, vocab = logits.shape
        dtype = lse.dtype
        # coefficient of softmax(x / tau) and of softmax(x / tau_sd) in the gradient, per row
        c1 = (grad.sum(-1) / tau).reshape(-1, 1)
        c2 = (grad_sd.sum(-1) / tau_sd).reshape(-1, 1)
        sparse = (grad / tau + grad_sd / tau_sd).reshape(batch * length, -1)
        flat_idx = idx.reshape(batch * length, -1)
        flat = logits.reshape(batch * length, vocab)
        lse_flat, lse_sd_flat = lse.reshape(-1, 1), lse_sd.reshape(-1, 1)
        out = torch.empty(batch * length, vocab, dtype=logits.dtype, device=logits.device)
        ratio = tau / tau_sd
        for rows in _blocks(batch * length, vocab):
            z = flat[rows].to(dtype)
            if tau != 1.0:
                z = z / tau
            p = (z - lse_flat[rows]).exp_()  # softmax at tau
            block = p * -c1[rows]
            # softmax at tau_sd = p ** ratio * exp(lse * ratio - lse_sd)
            p = _second_power(p, ratio).mul_(torch.exp(lse_flat[rows] * ratio - lse_sd_flat[rows]))
            block.sub_(p.mul_(c2[rows]))
            block.scatter_add_(-1, flat_idx[rows], sparse[rows])
            out[rows] = block.to(logits.dtype)
        return out.view(batch, length, vocab), None, None, None, None, None
