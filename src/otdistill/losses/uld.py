"""ULD, the Universal Logit Distillation baseline (Boizard et al. 2024), as restated by MultiLevelOT.

Per aligned position: sort both full-vocabulary distributions in descending order, zero-pad the shorter to
max(Vs, Vt), and sum the absolute differences. From a teacher cache that holds only the top-K sorted teacher
probabilities the teacher's tail beyond K is taken as zero; since the student's probabilities sum to one, the
student's tail needs no sort: sum_{j>K} s_j = 1 - sum_{j<=K} s_j. The error of that approximation is at
most the teacher's tail mass per position (docs/teacher_cache.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from otdistill.losses.inputs import (
    TeacherSide,
    WeightedParts,
    align,
    check_logits,
    check_pair,
    compute_dtype,
    masked_position_mean,
)


@dataclass(frozen=True)
class TeacherSortedProbs:
    """The teacher's top-K probabilities (B, Lt, K), descending, at temperature 1, and its vocab size."""

    probs: Tensor
    vocab_size: int


@dataclass(frozen=True)
class ULDOutput:
    loss: Tensor
    uld: Tensor


@torch.no_grad()
def teacher_sorted_probs(teacher_logits: Tensor, top: int | None = None) -> TeacherSortedProbs:
    """Sorted teacher probabilities for ULD: the top `top` of them, or all when `top` is None."""
    check_logits("teacher_logits", teacher_logits)
    vocab = teacher_logits.shape[-1]
    probs = torch.softmax(teacher_logits.to(compute_dtype(teacher_logits)), dim=-1)
    if top is None or top >= vocab:
        return TeacherSortedProbs(torch.sort(probs, dim=-1, descending=True).values, vocab)
    return TeacherSortedProbs(torch.topk(probs, top, dim=-1, sorted=True).values, vocab)


class ULDLoss(nn.Module):
    """weight * mean over aligned positions of || sort(p_t) - sort(p_s) ||_1 (zero-padded)."""

    def __init__(self, weight: float = 0.15) -> None:
        super().__init__()
        self.weight = weight

    @classmethod
    def from_train_config(cls, cfg: Any) -> ULDLoss:
        """The loss of a `TrainConfig` (registry interface, `otdistill.losses.registry`)."""
        return cls(weight=cfg.uld_weight)

    def weighted_parts(
        self, student_logits: Tensor, teacher: TeacherSide, student_mask: Tensor
    ) -> WeightedParts:
        """ULD with its weight (registry interface); from the cached sorted probabilities when the teacher
        side holds them, else from the live teacher's logits."""
        source = teacher.sorted_probs if teacher.sorted_probs is not None else teacher.logits
        if source is None:
            raise ValueError("ULD needs teacher logits or cached sorted teacher probabilities")
        return {"uld": (self(student_logits, source, student_mask, teacher.mask).uld, self.weight)}

    def weights(self) -> dict[str, float]:
        """Each part's weight in the objective (registry interface)."""
        return {"uld": self.weight}

    def forward(
        self,
        student_logits: Tensor,
        teacher: Tensor | TeacherSortedProbs,
        student_mask: Tensor,
        teacher_mask: Tensor,
    ) -> ULDOutput:
        """`teacher` is the teacher's response logits (B, Lt, Vt) or its cached `TeacherSortedProbs`."""
        t_tensor = teacher.probs if isinstance(teacher, TeacherSortedProbs) else teacher
        check_logits("teacher", t_tensor)
        s_mask, t_mask = check_pair(
            student_logits, t_tensor.shape[1], t_tensor.shape[0], student_mask, teacher_mask
        )
        alignment = align(s_mask, t_mask)
        length = alignment.aligned.shape[1]
        dtype = compute_dtype(student_logits)
        s_probs = torch.softmax(student_logits[:, :length].to(dtype), dim=-1)
        if isinstance(teacher, TeacherSortedProbs):
            t_sorted = teacher.probs[:, :length].to(device=student_logits.device, dtype=dtype)
            exact = t_sorted.shape[-1] >= teacher.vocab_size
        else:
            t_sorted = teacher_sorted_probs(teacher[:, :length]).probs.to(dtype)
            exact = True
        if exact:
            per_position = _sorted_l1(torch.sort(s_probs, dim=-1, descending=True).values, t_sorted)
        else:
            top = min(t_sorted.shape[-1], s_probs.shape[-1])
            s_top = torch.topk(s_probs, top, dim=-1, sorted=True).values
            head = _sorted_l1(s_top, t_sorted)
            per_position = head + (1.0 - s_top.sum(-1)).clamp(min=0.0)
        uld = masked_position_mean(per_position, alignment)
        return ULDOutput(loss=self.weight * uld, uld=uld)


def _sorted_l1(a: Tensor, b: Tensor) -> Tensor:
    """sum_j |a_j - b_j| over the last dimension, the shorter one zero-padded."""
    n = min(a.shape[-1], b.shape[-1])
    common = (a[..., :n] - b[..., :n]).abs().sum(-1)
    return common + a[..., n:].sum(-1) + b[..., n:].sum(-1)
