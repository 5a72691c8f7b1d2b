"""Batches as the Trainer sees them: one flat dict of tensors per micro-batch, rebuilt into `SideBatch`es.

transformers' Trainer moves dicts of tensors to the device, shards them across data-parallel ranks and skips
them on resume; a dataclass would bypass all of that. So the collator flattens a `PairedBatch` into
`input_ids`/`attention_mask`/`labels`/`response_positions`/`response_mask` for the trained model plus the
same keys prefixed with `teacher_` (and `example_ids`, a list of strings, for the teacher cache and error
messages), and `side_from_inputs` rebuilds the `SideBatch` on the other side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

import torch

from otdistill.data import PairedCollator, SideBatch, SideFeature, collate_side, pad_id_of
from otdistill.data.examples import Example
from otdistill.data.tokenization import PairedFeature, SideEncoder, encode_pair

TEACHER_PREFIX = "teacher_"
SIDE_KEYS: tuple[str, ...] = tuple(f.name for f in fields(SideBatch))


def side_to_inputs(side: SideBatch, prefix: str = "") -> dict[str, torch.Tensor]:
    return {f"{prefix}{key}": getattr(side, key) for key in SIDE_KEYS}


def side_from_inputs(inputs: Mapping[str, Any], prefix: str = "") -> SideBatch:
    """The `SideBatch` stored under `prefix` in a collated dict; a clear error if a key is missing."""
    missing = [f"{prefix}{k}" for k in SIDE_KEYS if f"{prefix}{k}" not in inputs]
    if missing:
        raise KeyError(f"batch lacks {', '.join(missing)}; was it built by TrainCollator(paired=...)?")
    values = {key: inputs[f"{prefix}{key}"] for key in SIDE_KEYS}
    values["response_mask"] = values["response_mask"].bool()
    return SideBatch(**values)


def has_teacher_side(inputs: Mapping[str, Any]) -> bool:
    return f"{TEACHER_PREFIX}input_ids" in inputs


class TrainCollator:
    """Trainer `data_collator`: PairedFeatures (distillation) or SideFeatures (SFT) -> a flat dict.

    For paired features, the trained model's side is the student's; the teacher's side goes under
    `teacher_*`. For side features (teacher SFT) only the unprefixed keys exist.
    """

    def __init__(self, pad_id: int, teacher_pad_id: int | None = None) -> None:
        self.pad_id = pad_id
        self.teacher_pad_id = teacher_pad_id

    @classmethod
    def for_pair(cls, teacher_tokenizer: Any, student_tokenizer: Any) -> TrainCollator:
        return cls(pad_id_of(student_tokenizer), pad_id_of(teacher_tokenizer))

    @classmethod
    def for_model(cls, tokenizer: Any) -> TrainCollator:
        return cls(pad_id_of(tokenizer))

    def __call__(self, features: Sequence[PairedFeature | SideFeature]) -> dict[str, Any]:
        if not features:
            raise ValueError("cannot collate an empty batch")
        first = features[0]
        if isinstance(first, PairedFeature):
            if self.teacher_pad_id is None:
                raise ValueError("paired features need TrainCollator.for_pair (a teacher pad id)")
            paired = [f for f in features if isinstance(f, PairedFeature)]
            batch = PairedCollator(self.teacher_pad_id, self.pad_id)(paired)
            out: dict[str, Any] = {"example_ids": batch.example_ids}
            out.update(side_to_inputs(batch.student))
            out.update(side_to_inputs(batch.teacher, TEACHER_PREFIX))
            return out
        if isinstance(first, SideFeature):
            sides = [f for f in features if isinstance(f, SideFeature)]
            return side_to_inputs(collate_side(sides, self.pad_id))
        raise TypeError(f"TrainCollator takes PairedFeature or SideFeature items, got {type(first).__name__}")


def encode_side_examples(
    examples: Sequence[Example],
    tokenizer: Any,
    *,
    max_length: int,
    max_prompt_tokens: int | None = None,
    name: str = "teacher",
) -> list[SideFeature]:
    """One model's features for SFT, cut exactly as `otdistill.data` cuts them for a pair (same rules)."""
    encoder = SideEncoder(tokenizer, name)
    features = []
    for index, example in enumerate(examples):
        (feature,), _ = encode_pair(
            example, (encoder,), max_length=max_length, max_prompt_tokens=max_prompt_tokens, index=index
        )
        features.append(feature)
    return features


def batch_lengths(inputs: Mapping[str, Any]) -> dict[str, int]:
    """Sequence and response lengths of a collated batch, for error messages."""
    out = {}
    for prefix, name in (("", "model"), (TEACHER_PREFIX, "teacher")):
        ids = inputs.get(f"{prefix}input_ids")
        if isinstance(ids, torch.Tensor):
            out[f"{name}_seq_len"] = int(ids.shape[1])
            out[f"{name}_response_len"] = int(inputs[f"{prefix}response_mask"].shape[1])
    return out
