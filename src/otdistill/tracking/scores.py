"""Scores recorded on registered model versions, keyed by the data and settings they were taken with.

The promotion gate compares a candidate with the champion on the same validation rows, evaluated the same
way. Scoring the champion again costs a GPU pass over the validation split, so a score, once taken, is kept
as a tag on the version: ``otdistill.scores.<validation sha256[:16]>.<settings sha256[:16]>`` holding the
JSON ``{metric: value}``. A later run with the same validation data hash and the same scoring settings
reuses it; any other run scores the champion again (in its `evaluate` step, where the GPU is) and records
that score under its own key. Tags are never overwritten with numbers from other data. The per-row scores
behind a recorded score (the bootstrap gate needs them, `otdistill.stats`) are a JSON artifact of the run
that recorded it, named by the tag ``<key>.rows``.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

SCORES_TAG_PREFIX = "otdistill.scores."
ROWS_TAG_SUFFIX = ".rows"  # <score key>.rows: where the per-row scores behind a recorded score are
ROW_SCORES_DIR = "row_scores"
MODELS_URI = "models:/"


def score_key(validation_sha256: str, settings: Mapping[str, Any]) -> str:
    """The tag key of scores taken on the data with content hash `validation_sha256` under `settings`."""
    if not validation_sha256:
        raise ValueError("a recorded score needs the validation data's content hash")
    digest = hashlib.sha256(json.dumps(dict(settings), sort_keys=True).encode()).hexdigest()
    return f"{SCORES_TAG_PREFIX}{validation_sha256[:16]}.{digest[:16]}"


def version_uri(name: str, version: str) -> str:
    return f"{MODELS_URI}{name}/{version}"


def parse_version_uri(uri: str) -> tuple[str, str]:
    """``models:/name/3`` -> ("name", "3"); anything else is an error naming the value."""
    rest = uri[len(MODELS_URI) :] if uri.startswith(MODELS_URI) else ""
    name, _, version = rest.rpartition("/")
    if not name or not version.isdigit():
        raise ValueError(f"not a registered model version URI (models:/<name>/<version>): {uri!r}")
    return name, version


def recorded_scores(client: MlflowClient, name: str, version: str, key: str) -> dict[str, float] | None:
    """The scores recorded on `name` v`version` under `key`, or None (none recorded, or unreadable)."""
    try:
        tags = client.get_model_version(name, version).tags
    except MlflowException:
        return None
    text = tags.get(key)
    if not text:
        return None
    try:
        values = {k: float(v) for k, v in json.loads(text).items()}
    except (ValueError, TypeError, AttributeError):
        return None
    return values if all(math.isfinite(v) for v in values.values()) else None


def record_scores(
    client: MlflowClient, name: str, version: str, key: str, scores: Mapping[str, float]
) -> None:
    """Keep `scores` on `name` v`version` under `key` (JSON, sorted; MLflow caps a tag at 8000 chars)."""
    text = json.dumps({k: float(v) for k, v in scores.items()}, sort_keys=True)
    client.set_model_version_tag(name, version, key, text)


def record_row_scores(
    client: MlflowClient,
    run_id: str,
    name: str,
    version: str,
    key: str,
    rows: Mapping[str, Mapping[str, float]],
) -> str:
    """Keep the per-row scores (``{example id: {metric: value}}``) behind `scores` for the bootstrap gate.

    Too large for a tag, so they are a JSON artifact of `run_id` (the registration step's run), and the
    version's tag ``<key>.rows`` holds its ``runs:/`` URI. Returns that URI.
    """
    path = f"{ROW_SCORES_DIR}/{name}-v{version}.{key.removeprefix(SCORES_TAG_PREFIX)}.json"
    data = {str(row): {k: float(v) for k, v in metrics.items()} for row, metrics in rows.items()}
    client.log_dict(run_id, data, path)
    uri = f"runs:/{run_id}/{path}"
    client.set_model_version_tag(name, version, key + ROWS_TAG_SUFFIX, uri)
    return uri


def recorded_row_scores(
    client: MlflowClient, name: str, version: str, key: str
) -> dict[str, dict[str, float]] | None:
    """The per-row scores recorded for `name` v`version` under `key`, or None (none recorded, unreadable)."""
    try:
        uri = client.get_model_version(name, version).tags.get(key + ROWS_TAG_SUFFIX, "")
    except MlflowException:
        return None
    run_id, _, path = uri.removeprefix("runs:/").partition("/")
    if not uri.startswith("runs:/") or not run_id or not path:
        return None
    with tempfile.TemporaryDirectory(prefix="otdistill-rows-") as scratch:
        try:
            local = client.download_artifacts(run_id, path, scratch)
            data = json.loads(Path(local).read_text(encoding="utf-8"))
            rows = {str(r): {str(k): float(v) for k, v in m.items()} for r, m in data.items()}
        except (MlflowException, OSError, ValueError, TypeError, AttributeError):
            return None
    finite = all(math.isfinite(v) for m in rows.values() for v in m.values())
    return rows if rows and finite else None


def alias_holder(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The model version holding `alias` now, or None (no such model, or no holder).

    Any other error (permission denied, server error) is raised: read as "no champion", it would let a
    candidate be promoted over a champion the step could not see.
    """
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def champion_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """The number of the version holding `alias` now, or None."""
    holder = alias_holder(client, name, alias)
    return str(holder.version) if holder is not None else None
