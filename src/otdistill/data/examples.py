"""The unit of data every other part sees: one task-independent `Example`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Example:
    """One training/evaluation example, the same text for teacher and student.

    `instruction` says what to do, `context` is the (truncatable) material it is about, `response` is
    the target text the student learns and the teacher scores, `references` are all gold answers used by
    the metric.
    """

    id: str
    instruction: str
    context: str
    response: str
    references: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_context(self, context: str) -> Example:
        """The same example with a (shortened) context; everything else, the response above all, unchanged."""
        return Example(self.id, self.instruction, context, self.response, list(self.references))
