"""Distillation losses: MultiLevelOT and ULD across tokenizers, forward KL within one tokenizer.

Each loss is a standalone `nn.Module` called as `loss(student_logits, teacher, student_mask, teacher_mask)` on
response-position logits, left-aligned, with boolean prefix masks, and returns a frozen dataclass whose
`.loss` is the weighted distillation term and whose other fields are its unweighted parts (for logging).
"""

from typing import TYPE_CHECKING

from otdistill.lazy import lazy_exports

if TYPE_CHECKING:
    from otdistill.losses.kl import ForwardKLLoss, ForwardKLOutput
    from otdistill.losses.multilevel_ot import MultiLevelOTLoss, MultiLevelOTOutput, TeacherTopK
    from otdistill.losses.sinkhorn import sinkhorn_plan
    from otdistill.losses.uld import TeacherSortedProbs, ULDLoss, ULDOutput, teacher_sorted_probs

__all__ = [
    "ForwardKLLoss",
    "ForwardKLOutput",
    "MultiLevelOTLoss",
    "MultiLevelOTOutput",
    "TeacherSortedProbs",
    "TeacherTopK",
    "ULDLoss",
    "ULDOutput",
    "sinkhorn_plan",
    "teacher_sorted_probs",
]

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(__name__, __file__, __all__)
