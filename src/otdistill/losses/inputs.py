"""Checks and bookkeeping shared by every distillation loss.

All losses take response-position logits, left-aligned, with a boolean prefix mask per side
(`../shared/docs/multilevelot.md`, "Inputs"). Misaligned or malformed inputs are the classic silent failure of
cross-tokenizer distillation, so they are rejected loudly here, naming the argument and the sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor


def compute_dtype(logits: Tensor) -> torch.dtype:
    """fp32 for half-precision inputs (bf16/fp16 logits are common on GPUs); float64 stays float64."""
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


def check_logits(name: str, logits: Tensor) -> None:
    if logits.dim() != 3:
        raise ValueError(f"{name} must have shape (B, L, V), got {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {logits.dtype}")


def check_mask(name: str, mask: Tensor, batch: int, length: int) -> Tensor:
    """Return `mask` as bool after checking it is (B, L) and a prefix of each row."""
    if mask.dim() != 2 or tuple(mask.shape) != (batch, length):
        raise ValueError(
            f"{name} must have shape ({batch}, {length}) to match the logits, got {tuple(mask.shape)}"
        )
    if mask.dtype != torch.bool:
        if mask.is_floating_point() or not torch.all((mask == 0) | (mask == 1)):
            raise ValueError(f"{name} must be boolean (or 0/1 integers), got {mask.dtype}")
        mask = mask.bool()
    if length > 1:
        gaps = (~mask[:, :-1]) & mask[:, 1:]
        bad = gaps.any(dim=1).nonzero().flatten()
        if bad.numel():
            raise ValueError(
                f"{name} must be a prefix (True positions first, then False) in every row; "
                f"rows {bad.tolist()[:10]} have True after False"
            )
    return mask


@dataclass(frozen=True)
class Alignment:
    """Per-sample lengths of both sides and the aligned positions i < m_b = min(n_s, n_t)."""

    n_s: Tensor  # (B,) long
    n_t: Tensor  # (B,) long
    m: Tensor  # (B,) long
    aligned: Tensor  # (B, min(Ls, Lt)) bool
    contributes: Tensor  # (B,) bool: n_s > 0 and n_t > 0


def align(student_mask: Tensor, teacher_mask: Tensor) -> Alignment:
    n_s = student_mask.sum(dim=1)
    n_t = teacher_mask.sum(dim=1)
    m = torch.minimum(n_s, n_t)
    length = min(student_mask.shape[1], teacher_mask.shape[1])
    positions = torch.arange(length, device=student_mask.device)
    aligned = positions.unsqueeze(0) < m.unsqueeze(1)
    return Alignment(n_s=n_s, n_t=n_t, m=m, aligned=aligned, contributes=(n_s > 0) & (n_t > 0))


def check_pair(
    student_logits: Tensor, teacher_len: int, teacher_batch: int, student_mask: Tensor, teacher_mask: Tensor
) -> tuple[Tensor, Tensor]:
    """Validate the shapes of a (student, teacher) pair; return both masks as bool."""
    check_logits("student_logits", student_logits)
    batch, s_len, _ = student_logits.shape
    if teacher_batch != batch:
        raise ValueError(f"batch sizes differ: student_logits has {batch}, teacher has {teacher_batch}")
    s_mask = check_mask("student_mask", student_mask.to(student_logits.device), batch, s_len)
    t_mask = check_mask("teacher_mask", teacher_mask.to(student_logits.device), batch, teacher_len)
    return s_mask, t_mask


def masked_position_mean(per_position: Tensor, alignment: Alignment) -> Tensor:
    """Sum `per_position` (B, L) over aligned positions of the batch, divided by sum_b m_b.

    With no aligned position at all the result is 0 and still has a gradient path (0 * finite values).
    """
    total = (per_position * alignment.aligned.to(per_position.dtype)).sum()
    count = alignment.m.sum().clamp(min=1).to(per_position.dtype)
    return total / count


class TeacherSide(Protocol):
    """What the training objective hands a registered loss about the teacher for one batch
    (`otdistill.training.objective.TeacherOutputs`): the response mask and, as the loss declares in the
    registry, the live teacher's logits or what the teacher cache holds for it."""

    @property
    def mask(self) -> Tensor: ...

    @property
    def logits(self) -> Tensor | None: ...

    @property
    def topk(self) -> Any: ...

    @property
    def sorted_probs(self) -> Any: ...


WeightedParts = dict[str, tuple[Tensor, float]]  # part name -> (unweighted mean, weight in the loss)
