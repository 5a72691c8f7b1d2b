"""Forward KL distillation for a teacher and student that share one tokenizer (the classic same-vocab case).

Positions align one to one only when both sides tokenise the response identically, so this loss refuses
logits whose vocabularies differ; the trainer additionally refuses it when the tokenizers differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from otdistill.losses.inputs import align, check_logits, check_pair, compute_dtype, masked_position_mean


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
