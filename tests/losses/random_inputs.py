from __future__ import annotations

import torch


def prefix_mask(lengths: list[int], width: int) -> torch.Tensor:
    return torch.arange(width).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)


def random_pair(
    seed: int,
    lengths_s: list[int],
    lengths_t: list[int],
    ls: int,
    lt: int,
    vs: int,
    vt: int,
    scale: float = 3.0,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Student/teacher logits with Vs != Vt and Ls != Lt, and prefix masks of the given lengths."""
    gen = torch.Generator().manual_seed(seed)
    batch = len(lengths_s)
    s = (torch.randn(batch, ls, vs, generator=gen, dtype=torch.float64) * scale).to(dtype)
    t = (torch.randn(batch, lt, vt, generator=gen, dtype=torch.float64) * scale).to(dtype)
    return s, t, prefix_mask(lengths_s, ls), prefix_mask(lengths_t, lt)
