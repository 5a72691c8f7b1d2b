"""Row-level validation errors.

A bad row is always reported by its index in the source and the field at fault, so that a user can find it
in the file; whether it stops the run or is skipped (and counted) is the caller's policy (`on_error`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class RowIssue:
    """One problem with one row: where (`index`, `field`), what kind (`reason`), and a readable message."""

    index: int
    field: str
    reason: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"row {self.index}, field {self.field!r}: {self.message} [{self.reason}]"


class RowValidationError(ValueError):
    """Raised for a row that cannot become an example; carries the `RowIssue` that names index and field."""

    def __init__(self, issue: RowIssue) -> None:
        super().__init__(str(issue))
        self.issue = issue

    @classmethod
    def make(cls, index: int, field: str, reason: str, message: str) -> RowValidationError:
        return cls(RowIssue(index=index, field=field, reason=reason, message=message))


class DataSourceError(RuntimeError):
    """The source itself cannot be read (missing file, unreachable hub, bad S3 URI): not a per-row problem."""


class DataValidationError(RowValidationError):
    """A bad row under `on_error="fail"`: the row's issue plus which data set it is in, and how to go on."""

    def __init__(self, issue: RowIssue, where: str) -> None:
        ValueError.__init__(
            self, f"{where}: {issue} (set on_error='skip' in DataConfig to skip and count such rows instead)"
        )
        self.issue = issue
        self.where = where
