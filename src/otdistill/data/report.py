"""`DataReport`: what a run read, kept, skipped (and why), and truncated; JSON-serialisable for tracking."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from otdistill.data.errors import RowIssue

MAX_RECORDED_ISSUES = 20


@dataclass
class DataReport:
    """Counts and identity of one loaded split.

    `skipped_by_reason` counts skipped rows per reason (missing, empty, wrong_type, too_long, invalid_json,
    invalid_utf8, invalid_text, duplicate_id); `issues` keeps the first `MAX_RECORDED_ISSUES` bad rows with
    index, field and message.
    `content_sha256` identifies the kept examples (see `otdistill.data.hashing`).
    """

    task: str
    source: str
    split: str
    revision: str | None = None
    rows_read: int = 0
    rows_kept: int = 0
    rows_skipped: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    issues: list[dict[str, Any]] = field(default_factory=list)
    truncated: int = 0
    content_sha256: str = ""

    def record_skip(self, issue: RowIssue) -> None:
        self.rows_skipped += 1
        counts = Counter(self.skipped_by_reason)
        counts[issue.reason] += 1
        self.skipped_by_reason = dict(sorted(counts.items()))
        if len(self.issues) < MAX_RECORDED_ISSUES:
            self.issues.append(issue.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def write_json(self, path: str | Path) -> Path:
        """Write the report (e.g. as a pipeline step's output artifact); returns the path."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(self.to_json() + "\n", encoding="utf-8")
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataReport:
        """Inverse of `to_dict` (reading a report written by an earlier pipeline step)."""
        return cls(**data)

    def counts(self) -> dict[str, float]:
        """The row counts as flat numbers (``rows_kept``, ``skipped/<reason>``, ...) for a tracker, which
        names them (`otdistill.tracking.metric_names.data_metric`)."""
        out = {
            "rows_read": float(self.rows_read),
            "rows_kept": float(self.rows_kept),
            "rows_skipped": float(self.rows_skipped),
            "truncated": float(self.truncated),
        }
        out.update({f"skipped/{k}": float(v) for k, v in self.skipped_by_reason.items()})
        return out

    def summary(self) -> str:
        reasons = ", ".join(f"{k}={v}" for k, v in self.skipped_by_reason.items()) or "none"
        return (
            f"{self.task}/{self.split} from {self.source}: read {self.rows_read}, kept {self.rows_kept}, "
            f"skipped {self.rows_skipped} ({reasons}), truncated {self.truncated}, "
            f"sha256 {self.content_sha256[:12]}"
        )
