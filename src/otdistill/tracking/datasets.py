"""The prepared data splits as MLflow datasets: a run's Datasets view shows what it trained and was scored on.

`prepare_data` snapshots each split once (`data_report.json` beside the rows). Every step that reads a
snapshot logs it as an input of its run (`mlflow.log_input`) with the role it played there (the input's
context: ``training``, ``validation``, ``testing``, ``evaluation``). The dataset carries no rows (they
stay in the pipeline's Dataset artifact): its source is where the rows came from (the hub data set with
its revision, the S3 prefix, the local path), its digest the first `DIGEST_CHARS` hex of the kept rows'
content hash (MLflow's digest column holds 36 characters), and its profile the counts, the revision and
the whole hash. MLflow keeps one dataset per experiment, name and digest, so every run that used the same
rows points at the same one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import get_registered_sources
from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource
from mlflow.data.meta_dataset import MetaDataset

from otdistill.data.report import DataReport
from otdistill.data.sources import source_kind
from otdistill.fingerprint import DATA_REPORT

DIGEST_CHARS = 16
CONTEXTS = ("training", "validation", "testing", "evaluation")


class PreparedDataset(MetaDataset):
    """A prepared split, by reference: source, name, digest and a profile with its counts."""

    def __init__(self, source: DatasetSource, name: str, digest: str, profile: dict[str, Any]) -> None:
        self._profile = dict(profile)
        super().__init__(source, name=name, digest=digest)

    @property
    def profile(self) -> dict[str, Any]:
        return dict(self._profile)

    def to_dict(self) -> dict[str, str]:
        config = super().to_dict()
        config["profile"] = json.dumps(self._profile, sort_keys=True)
        return config


def _file_source(uri: str, source_type: str) -> DatasetSource:
    """MLflow's registered artifact-store source for `source_type` (``local``, ``s3``). Built directly: its
    resolver warns that two registered classes (``file:`` and plain paths) both claim a local path."""
    for cls in get_registered_sources():  # classes, though typed as instances
        if cls._get_source_type() == source_type:
            return cast(Callable[[str], DatasetSource], cls)(uri)
    raise LookupError(f"MLflow has no dataset source of type {source_type!r} registered")


def dataset_source(source: str, split: str, revision: str | None, subset: str | None = None) -> DatasetSource:
    """Where a split's rows came from, as MLflow describes it: a `DataConfig.source` string (hub id, S3
    prefix or local path) with the split and, for the hub, its revision and configuration."""
    kind = source_kind(source)
    if kind == "hub":
        return HuggingFaceDatasetSource(path=source, config_name=subset, split=split, revision=revision)
    return _file_source(source, kind)


def prepared_dataset(report: DataReport, subset: str | None = None) -> PreparedDataset:
    """The MLflow dataset of the split `report` describes (its content hash is the digest's origin)."""
    if not report.content_sha256:
        raise ValueError(f"the data report of {report.source}/{report.split} has no content hash")
    profile = {
        "rows": report.rows_kept,
        "rows_read": report.rows_read,
        "rows_skipped": report.rows_skipped,
        "truncated": report.truncated,
        "split": report.split,
        "revision": report.revision or "",
        "content_sha256": report.content_sha256,
        "task": report.task,
    }
    return PreparedDataset(
        dataset_source(report.source, report.split, report.revision, subset),
        name=f"{report.task}/{report.split}",
        digest=report.content_sha256[:DIGEST_CHARS],
        profile=profile,
    )


def snapshot_dataset(snapshot_dir: str | Path, subset: str | None = None) -> PreparedDataset:
    """The dataset of a `prepare_data` snapshot directory, from the report written beside its rows."""
    path = Path(snapshot_dir) / DATA_REPORT
    try:
        report = DataReport.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path}: no data report beside the snapshot (not a prepare_data output)"
        ) from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a data report: {exc}") from exc
    return prepared_dataset(report, subset)


def log_dataset(dataset: PreparedDataset, context: str) -> None:
    """Record `dataset` as an input of MLflow's active run (the step run), in the role `context`."""
    import mlflow

    if context not in CONTEXTS:
        raise ValueError(f"dataset context must be one of {', '.join(CONTEXTS)}, got {context!r}")
    if mlflow.active_run() is None:
        raise RuntimeError(f"no active MLflow run to log dataset {dataset.name} to (log it inside step_run)")
    mlflow.log_input(dataset, context=context)
