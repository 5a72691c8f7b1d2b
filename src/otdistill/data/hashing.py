"""Data-set identity: a sha256 over a canonical serialisation of the examples a run actually used.

The hash is taken over the task-normalised `Example`s (id, instruction, context, response, references), in
order, each as compact key-sorted UTF-8 JSON on its own line, preceded by the task name. It therefore does
not depend on the file format (JSON Lines and Parquet of the same rows agree) or on unused columns, but
changes with any character of any used text, with the row order, and with which rows were kept.

A split whose teacher prompts show few-shot examples (`LoadedSplit.shots`) hashes them too, after the
examples under a line ``shots``: they change what the teacher conditions on. Without shots the hash is
what it always was.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence

from otdistill.data.examples import Example

HASH_FORMAT = "otdistill-examples-v1"


def canonical_line(example: Example) -> bytes:
    return (
        json.dumps(example.to_dict(), sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode(
            "utf-8"
        )
        + b"\n"
    )


class ContentHasher:
    """Incremental form of `content_hash`, for hashing while rows stream past."""

    def __init__(self, task: str) -> None:
        self._h = hashlib.sha256(f"{HASH_FORMAT}\ntask={task}\n".encode())
        self.count = 0

    def update(self, example: Example) -> None:
        self._h.update(canonical_line(example))
        self.count += 1

    def hexdigest(self) -> str:
        return self._h.hexdigest()

    def update_shots(self, shots: Sequence[Example]) -> None:
        """After the examples: the few-shot examples the teacher's prompts show (nothing when none)."""
        if shots:
            self._h.update(b"shots\n")
            for shot in shots:
                self._h.update(canonical_line(shot))


def content_hash(task: str, examples: Iterable[Example], shots: Sequence[Example] = ()) -> str:
    """sha256 hex digest identifying exactly these examples of this task (and the teacher's shots)."""
    hasher = ContentHasher(task)
    for ex in examples:
        hasher.update(ex)
    hasher.update_shots(shots)
    return hasher.hexdigest()
