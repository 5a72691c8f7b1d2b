"""Where the teacher's side of the loss comes from: a live frozen model, or the precomputed top-k cache.

Live: the teacher is frozen (no parameter requires grad), in eval mode (no dropout), run under no_grad on
the student's device, and only its response positions are projected onto its (large: 262k for Gemma-3)
vocabulary. It is not part of the trained model, so the optimizer, DDP and checkpoints never see it.
Cache: no teacher model at all; the cache returns, per example id, what the loss needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import torch
from torch import nn

from otdistill.data import PairedBatch
from otdistill.teacher_cache import TeacherCache
from otdistill.training.inputs import TEACHER_PREFIX, side_from_inputs
from otdistill.training.objective import TeacherOutputs


class TeacherSource(Protocol):
    """Gives the teacher's side of one collated batch."""

    def __call__(self, inputs: Mapping[str, Any], device: torch.device) -> TeacherOutputs: ...


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode, no gradients: a teacher is a constant of the student's loss."""
    model.eval()
    model.requires_grad_(False)
    return model


class LiveTeacher:
    """A frozen teacher model run on each batch's `teacher_*` side."""

    def __init__(self, model: nn.Module) -> None:
        self.model = freeze(model)

    @torch.no_grad()
    def __call__(self, inputs: Mapping[str, Any], device: torch.device) -> TeacherOutputs:
        side = side_from_inputs(inputs, TEACHER_PREFIX).to(device)
        if self.model.training:  # something (e.g. a callback) switched it back: a teacher never trains
            self.model.eval()
        out = self.model(
            input_ids=side.input_ids,
            attention_mask=side.attention_mask,
            logits_to_keep=side.response_positions,  # (B, R): logits only where a response token is predicted
            use_cache=False,
        )
        return TeacherOutputs(mask=side.response_mask, logits=out.logits)


class CachedTeacher:
    """The teacher's top-k (MultiLevelOT) and sorted probabilities (ULD) read from a `TeacherCache`.

    The cache checks each example's number of response positions against the batch's teacher side, so a
    cache built from another tokenisation fails loudly instead of training on misaligned rows.
    """

    def __init__(self, cache: TeacherCache) -> None:
        self.cache = cache

    def __call__(self, inputs: Mapping[str, Any], device: torch.device) -> TeacherOutputs:
        side = side_from_inputs(inputs, TEACHER_PREFIX)
        ids = list(inputs.get("example_ids", []))
        if len(ids) != side.input_ids.shape[0]:
            raise ValueError(
                "the teacher cache needs the batch's example_ids (collate with TrainCollator.for_pair)"
            )
        cached = self.cache.for_batch(PairedBatch(ids, side, side), device)
        return TeacherOutputs(mask=cached.mask, topk=cached.topk, sorted_probs=cached.sorted)
