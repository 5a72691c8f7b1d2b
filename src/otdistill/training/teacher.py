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


def shard_teacher(model: nn.Module) -> nn.Module:
    """Shard a frozen teacher over the data-parallel ranks with FSDP2 (`fully_shard`).

    Each rank keeps 1/world_size of the teacher's weights; each decoder layer's weights are gathered just
    for its forward and freed after it. For teachers that do not fit next to the student on one GPU. Every
    rank must run the teacher on every step (they do: one micro-batch per rank per step).
    """
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "sharding the teacher needs torch.distributed to be initialised (launch with torchrun)"
        )
    block_names = set(getattr(model, "_no_split_modules", None) or [])
    blocks = [m for m in model.modules() if type(m).__name__ in block_names]
    if not blocks:
        raise ValueError(
            f"cannot find the decoder layers of {type(model).__name__} to shard "
            f"(looked for its _no_split_modules: {sorted(block_names)})"
        )
    freeze(model)
    for block in blocks:
        fully_shard(block)
    fully_shard(model)
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
