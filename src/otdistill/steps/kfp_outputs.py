"""Writing a component's KFP output artifacts: metrics, and text artifacts (Markdown, HTML) the UI renders.

Kept apart from the ML code (no import beyond the standard library) so that every component, light or
heavy, imports it inside its function body. One rule lives here: an output artifact must have a file at
its path. On a cluster KFP records Metrics from the artifact's metadata, but kfp.local treats an output
artifact without a file as missing, so a step re-run would never be a cache hit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol


class MetricsArtifact(Protocol):
    """What is used of `kfp.dsl.Metrics` (structural, so this module does not import kfp)."""

    @property
    def path(self) -> str: ...

    def log_metric(self, metric: str, value: float) -> None: ...


class PathArtifact(Protocol):
    """Any KFP output artifact: only its local path is used."""

    @property
    def path(self) -> str: ...


def log_metrics(metrics: MetricsArtifact, values: Mapping[str, float]) -> None:
    """Log each value as a KFP metric (one entry per name, shown in the UI) and write them all, as JSON,
    to the artifact's file (the file kfp.local needs; see the module doc)."""
    for name, value in values.items():
        metrics.log_metric(name, value)
    write_text(metrics, json.dumps(dict(values), indent=2, sort_keys=True))


def write_text(artifact: PathArtifact, text: str) -> None:
    """Write `text` (UTF-8) as the artifact's file, creating its directory (kfp.local does not)."""
    path = Path(artifact.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
