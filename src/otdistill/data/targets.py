"""Training rows whose target is the teacher's generated answer, not the gold one (the authors' recipe).

A teacher-answers snapshot (`otdistill.steps.teacher_answers`) holds the gold snapshot's rows in the
source's own layout, each with one extra field, `RECORD_FIELD`, so the gold fields stay as they were, for
the record:

* ``{"target": "<answer>", "target_source": "teacher"}``, and ``"context_chars": n`` when the teacher's
  prompt had its context cut: the example's response is the answer and its context the first n characters,
  the context the teacher answered from;
* ``{"shot": true}``: the row is one of the teacher's few-shot examples (with its gold answer). It is shown
  in the teacher's prompts and is not itself a training row.

`otdistill.data.load_examples` applies the record (`read_record`, `apply_record`), so every step that reads
the snapshot (teacher cache, distillation, SFT) sees the same examples and the same shots.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from otdistill.data.errors import RowValidationError
from otdistill.data.examples import Example

#: The one field of a snapshot row that otdistill writes; a source row of a user never carries it.
RECORD_FIELD = "_otdistill"


def shot_record() -> dict[str, Any]:
    """The record of a row that is one of the teacher's few-shot examples."""
    return {"shot": True}


def target_record(answer: str, context_chars: int | None = None) -> dict[str, Any]:
    """The record of a row whose target is the teacher's `answer`, given from the context's first
    `context_chars` characters (None: the whole context)."""
    record: dict[str, Any] = {"target": answer, "target_source": "teacher"}
    if context_chars is not None:
        record["context_chars"] = context_chars
    return record


def read_record(row: Mapping[str, Any], index: int) -> dict[str, Any] | None:
    """The row's record, None when it has none; a malformed one is a `RowValidationError` naming it."""
    record = row.get(RECORD_FIELD)
    if record is None:
        return None
    if not isinstance(record, Mapping):
        raise RowValidationError.make(
            index, RECORD_FIELD, "wrong_type", f"expected a mapping, got {type(record).__name__}"
        )
    if record.get("shot") is True:
        return dict(record)
    target = record.get("target")
    if not isinstance(target, str) or not target.strip():
        raise RowValidationError.make(index, f"{RECORD_FIELD}.target", "empty", "no teacher answer")
    chars = record.get("context_chars")
    if chars is not None and (isinstance(chars, bool) or not isinstance(chars, int) or chars < 0):
        raise RowValidationError.make(
            index, f"{RECORD_FIELD}.context_chars", "wrong_type", f"expected a count >= 0, got {chars!r}"
        )
    return dict(record)


def is_shot(record: Mapping[str, Any] | None) -> bool:
    return bool(record and record.get("shot") is True)


def apply_record(example: Example, record: Mapping[str, Any]) -> Example:
    """`example` as the record says: the teacher's answer as its response, its context as answered from.
    The references stay the gold ones."""
    chars = record.get("context_chars")
    context = example.context if chars is None else example.context[:chars]
    return replace(example, response=str(record["target"]), context=context)
