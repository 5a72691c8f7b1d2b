"""The training objective as a plug-in of the Trainer: cross-entropy plus one distillation term.

Every term is returned unweighted and as a mean over its own count (`tokens` for the CE, `aligned`
positions for HAD, SL, ULD and KL, contributing `sequences` for SD), exactly as `otdistill.losses` defines
it. `combine` turns those means back into sums and divides by the counts of the whole optimizer step (all
micro-batches of the gradient accumulation, on all data-parallel ranks), so that 2 GPUs x batch 4, or
batch 4 x 2 accumulation steps, optimise exactly the loss of one batch of 8.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from otdistill.data import SideBatch
from otdistill.losses import TeacherSortedProbs, TeacherTopK
from otdistill.losses.registry import get_loss, part_labels
from otdistill.training.config import TrainConfig

COUNT_KEYS: tuple[str, ...] = ("tokens", "aligned", "sequences")
PART_LABELS: dict[str, str] = part_labels()  # part -> log label, of every registered loss


@dataclass(frozen=True)
class TeacherOutputs:
    """The teacher's side of one batch: full response logits (live) or what the cache holds, and its mask."""

    mask: Tensor  # (B, Rt) bool prefix
    logits: Tensor | None = None  # (B, Rt, Vt), live teacher
    topk: TeacherTopK | None = None  # cache, MultiLevelOT
    sorted_probs: TeacherSortedProbs | None = None  # cache, ULD


@dataclass(frozen=True)
class LossTerm:
    """One part of the loss: its unweighted mean `value` over `count` items of this micro-batch."""

    name: str
    value: Tensor
    weight: float
    count: str


def response_targets(side: SideBatch) -> Tensor:
    """(B, R) the response token each response logit predicts (the token after its position)."""
    nxt = (side.response_positions + 1).clamp(max=side.input_ids.shape[1] - 1)
    return side.input_ids.gather(1, nxt)


def response_cross_entropy(logits: Tensor, side: SideBatch) -> Tensor:
    """Mean next-token cross-entropy over the response tokens of the batch (fp32 whatever the logits are)."""
    targets = response_targets(side)
    per_token = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    mask = side.response_mask.flatten().to(per_token.dtype)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


def local_counts(student_mask: Tensor, teacher_mask: Tensor | None) -> dict[str, Tensor]:
    """Counts of this micro-batch (float64 scalars): response tokens, aligned positions, contributing rows."""
    n_s = student_mask.sum(dim=1)
    counts = {"tokens": n_s.sum().double()}
    if teacher_mask is None:
        counts["aligned"] = torch.zeros((), dtype=torch.float64, device=n_s.device)
        counts["sequences"] = torch.zeros((), dtype=torch.float64, device=n_s.device)
        return counts
    n_t = teacher_mask.sum(dim=1)
    counts["aligned"] = torch.minimum(n_s, n_t).sum().double()
    counts["sequences"] = ((n_s > 0) & (n_t > 0)).sum().double()
    return counts


def combine(
    terms: list[LossTerm],
    local: Mapping[str, Tensor],
    total: Mapping[str, Tensor],
    scale: float = 1.0,
) -> Tensor:
    """sum_t weight_t * value_t * local_count / total_count, times `scale` (the DDP world size).

    With `total` = the counts of the whole optimizer step, the gradients summed over micro-batches (and
    averaged over ranks by DDP, undone by `scale`) are those of the full batch's loss.
    """
    loss: Tensor | None = None
    for term in terms:
        share = (local[term.count] / total[term.count].clamp(min=1)).to(term.value.dtype)
        part = term.weight * term.value * share
        loss = part if loss is None else loss + part
    if loss is None:
        raise ValueError("no loss terms")
    return loss * scale


class DistillationObjective:
    """Builds the terms of one micro-batch's loss from the config: CE and the chosen distillation term.

    Only the loss the config names is built, through the loss registry (`otdistill.losses.registry`),
    which also says which parts it logs and over which count each is averaged.
    """

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.spec = get_loss(config.loss, field="TrainConfig.loss")
        self.loss: Any = self.spec.load().from_train_config(config) if self.spec.needs_teacher else None

    @property
    def part_names(self) -> tuple[str, ...]:
        return ("ce", *(part.name for part in self.spec.parts))

    def weights(self) -> dict[str, float]:
        """Each term's weight in the objective: the CE's and the loss's parts' (`weights()` of the loss)."""
        return {"ce": self.config.ce_weight, **(self.loss.weights() if self.loss is not None else {})}

    def terms(
        self, student_logits: Tensor, student: SideBatch, teacher: TeacherOutputs | None
    ) -> list[LossTerm]:
        """The loss terms of one micro-batch; `student_logits` are the (B, R, V) response logits."""
        cfg = self.config
        terms = [LossTerm("ce", response_cross_entropy(student_logits, student), cfg.ce_weight, "tokens")]
        if self.loss is None:
            return terms
        if teacher is None:
            raise ValueError(f"loss {cfg.loss!r} needs the teacher's outputs, got none")
        parts = self.loss.weighted_parts(student_logits, teacher, student.response_mask)
        for part in self.spec.parts:
            value, weight = parts[part.name]
            terms.append(LossTerm(part.name, value, weight, part.count))
        return terms
