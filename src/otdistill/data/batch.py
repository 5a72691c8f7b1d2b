"""Batches that carry both models' sides, and the gather of response-position logits.

Each side is padded on the right with its own tokenizer's pad id (teacher and student have different lengths
and different pad tokens). `response_positions` / `response_mask` turn a model's (B, L, V) logits into the
left-aligned (B, R, V) response logits that `MultiLevelOTLoss` takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch

from otdistill.data.tokenization import PairedFeature, SideFeature

IGNORE_INDEX = -100


@dataclass
class SideBatch:
    """One model's side of a batch (shapes: B rows, L tokens, R response tokens).

    input_ids (B, L) long, attention_mask (B, L) long, labels (B, L) long with -100 off the response,
    response_positions (B, R) long: index of the logit that predicts response token i (0 on padding),
    response_mask (B, R) bool, a prefix of each row.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    response_positions: torch.Tensor
    response_mask: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> SideBatch:
        return SideBatch(
            **{f.name: getattr(self, f.name).to(device, non_blocking=non_blocking) for f in fields(self)}
        )

    @property
    def response_lengths(self) -> torch.Tensor:
        return self.response_mask.sum(dim=1)


@dataclass
class PairedBatch:
    """A batch for distillation: the same examples, tokenised for the teacher and for the student."""

    example_ids: list[str]
    teacher: SideBatch
    student: SideBatch

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PairedBatch:
        return PairedBatch(
            list(self.example_ids),
            self.teacher.to(device, non_blocking=non_blocking),
            self.student.to(device, non_blocking=non_blocking),
        )

    def __len__(self) -> int:
        return len(self.example_ids)


def pad_id_of(tokenizer: Any) -> int:
    """The tokenizer's pad id, falling back to its EOS (padding is masked out, so any real id works)."""
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    raise ValueError("tokenizer has neither pad_token_id nor eos_token_id; cannot pad")


def collate_side(features: Sequence[SideFeature], pad_id: int) -> SideBatch:
    """Right-pad one side's features into a `SideBatch`."""
    if not features:
        raise ValueError("cannot collate an empty batch")
    B = len(features)
    L = max(len(f.input_ids) for f in features)
    R = max(f.n_response for f in features)
    input_ids = torch.full((B, L), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((B, L), dtype=torch.long)
    labels = torch.full((B, L), IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros((B, R), dtype=torch.long)
    response_mask = torch.zeros((B, R), dtype=torch.bool)
    for b, f in enumerate(features):
        n, start = len(f.input_ids), f.response_start
        if start < 1 or f.n_response < 1:
            raise ValueError(
                f"row {b}: a feature needs a non-empty prompt and response (start={start}, len={n})"
            )
        ids = torch.tensor(f.input_ids, dtype=torch.long)
        input_ids[b, :n] = ids
        attention_mask[b, :n] = 1
        labels[b, start:n] = ids[start:]
        positions[b, : f.n_response] = torch.arange(start - 1, n - 1)
        response_mask[b, : f.n_response] = True
    return SideBatch(input_ids, attention_mask, labels, positions, response_mask)


class PairedCollator:
    """`collator(features) -> PairedBatch`: pads the teacher's and the student's sides separately."""

    def __init__(self, teacher_pad_id: int, student_pad_id: int) -> None:
        self.teacher_pad_id = teacher_pad_id
        self.student_pad_id = student_pad_id

    @classmethod
    def from_tokenizers(cls, teacher_tokenizer: Any, student_tokenizer: Any) -> PairedCollator:
        return cls(pad_id_of(teacher_tokenizer), pad_id_of(student_tokenizer))

    def __call__(self, features: Sequence[PairedFeature]) -> PairedBatch:
        return PairedBatch(
            example_ids=[f.example_id for f in features],
            teacher=collate_side([f.teacher for f in features], self.teacher_pad_id),
            student=collate_side([f.student for f in features], self.student_pad_id),
        )


def response_logits(logits: torch.Tensor, side: SideBatch) -> torch.Tensor:
    """(B, R, V): `logits[b, side.response_positions[b, i]]`, row i predicting response token i.

    Only the R response rows are gathered; the index is an expanded (stride-0) view, so nothing of size
    (B, R, V) is built besides the result. Padded rows (mask False) hold position 0's logits and must
    be masked with `side.response_mask`.
    """
    if logits.dim() != 3:
        raise ValueError(f"expected logits (B, L, V), got shape {tuple(logits.shape)}")
    B, L, V = logits.shape
    positions = side.response_positions.to(logits.device)
    if positions.shape[0] != B:
        raise ValueError(f"logits batch {B} != response_positions batch {positions.shape[0]}")
    if positions.numel() and int(positions.max()) >= L:
        raise ValueError(f"a response position ({int(positions.max())}) is beyond the logits length {L}")
    return logits.gather(1, positions.unsqueeze(-1).expand(B, positions.shape[1], V))
