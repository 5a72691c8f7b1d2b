"""Forward KL distillation for a teacher and student that share one tokenizer (the classic same-vocab case).

Positions align one to one only when both sides tokenise the response identically, so this loss refuses
logits whose vocabularies differ; the trainer additionally refuses it when the tokenizers differ.
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
class ForwardKLOutput:
    loss: Tensor
    kl: Tensor


class ForwardKLLoss(nn.Module):
    """weight * mean over aligned positions of KL(p_t || p_s), both at `temperature`."""

    def __init__(self, weight: float = 1.0, temperature: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.weight = weight
        self.temperature = temperature

    @classmethod
    def from_train_config(cls, cfg: Any) -> ForwardKLLoss:
        """The loss of a `TrainConfig` (registry interface, `otdistill.losses.registry`)."""
        return cls(weight=cfg.kl_weight, temperature=cfg.kl_temperature)

    def weighted_parts(
        self, student_logits: Tensor, teacher: TeacherSide, student_mask: Tensor
    ) -> WeightedParts:
        """Forward KL with its weight (registry interface); needs the live teacher's full logits."""
        if teacher.logits is None:
            raise ValueError("forward KL needs the live teacher's full logits")
        return {"kl": (self(student_logits, teacher.logits, student_mask, teacher.mask).kl, self.weight)}

    def weights(self) -> dict[str, float]:
        """Each part's weight in the objective (registry interface)."""
        return {"kl": self.weight}

    def forward(
        self, student_logits: Tensor, teacher_logits: Tensor, student_mask: Tensor, teacher_mask: Tensor
    ) -> ForwardKLOutput:
        check_logits("teacher_logits", teacher_logits)
        s_mask, t_mask = check_pair(
            student_logits, teacher_logits.shape[1], teacher_logits.shape[0], student_mask, teacher_mask
        )
        if student_logits.shape[-1] != teacher_logits.shape[-1]:
            raise ValueError(
                f"forward KL needs one shared vocabulary, got Vs={student_logits.shape[-1]} and "
                f"Vt={teacher_logits.shape[-1]}: use MultiLevelOTLoss or ULDLoss across tokenizers"
            )
        alignment = align(s_mask, t_mask)
        length = alignment.aligned.shape[1]
        dtype = compute_dtype(student_logits)
        log_s = torch.log_softmax(student_logits[:, :length].to(dtype) / self.temperature, dim=-1)
        with torch.no_grad():
            log_t = torch.log_softmax(teacher_logits[:, :length].to(dtype) / self.temperature, dim=-1)
        per_position = (log_t.exp() * (log_t - log_s)).sum(-1)
        kl = masked_position_mean(per_position, alignment)
        return ForwardKLOutput(loss=self.weight * kl, kl=kl)
