"""Prepared splits as MLflow datasets: source (hub with revision, S3, local path), digest, row counts, logged
as run inputs on a real local MLflow store and read back through the client."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from otdistill.data.report import DataReport
from otdistill.tracking.datasets import DIGEST_CHARS, log_dataset, prepared_dataset, snapshot_dataset

SHA = "ab" * 32


def _report(source: str, revision: str | None = None) -> DataReport:
    return DataReport(
        task="dialogsum",
        source=source,
        split="train",
        revision=revision,
        rows_read=10,
        rows_kept=8,
        rows_skipped=2,
        skipped_by_reason={"empty": 2},
        content_sha256=SHA,
    )


def test_the_source_says_where_the_rows_came_from() -> None:
    hub = json.loads(prepared_dataset(_report("knkarthick/dialogsum", "0a1b2c"), "small").to_dict()["source"])
    assert hub == {
        "path": "knkarthick/dialogsum",
        "config_name": "small",
        "data_dir": None,
        "data_files": None,
        "split": "train",
        "revision": "0a1b2c",
    }
    s3 = prepared_dataset(_report("s3://bucket/dialogsum"))
    assert (s3.source._get_source_type(), json.loads(s3.source.to_json())) == (
        "s3",
        {"uri": "s3://bucket/dialogsum"},
    )
    local = prepared_dataset(_report("/data/dialogsum"))
    assert local.source._get_source_type() == "local"
    with pytest.raises(ValueError, match="no content hash"):
        prepared_dataset(DataReport(task="dialogsum", source="/d", split="train"))


def test_logged_as_a_run_input_with_digest_and_counts(tmp_path: Path) -> None:
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.create_experiment("datasets", artifact_location=(tmp_path / "a").as_uri())
    snapshot = tmp_path / "train"
    snapshot.mkdir()
    (snapshot / "data_report.json").write_text(_report("knkarthick/dialogsum", "0a1b2c").to_json())
    with mlflow.start_run(experiment_id=experiment) as run:
        log_dataset(snapshot_dataset(snapshot), "training")
        with pytest.raises(ValueError, match="context must be one of"):
            log_dataset(snapshot_dataset(snapshot), "train")
    inputs = MlflowClient().get_run(run.info.run_id).inputs
    assert inputs is not None
    (logged,) = inputs.dataset_inputs
    assert {t.key: t.value for t in logged.tags}["mlflow.data.context"] == "training"
    assert (logged.dataset.name, logged.dataset.digest) == ("dialogsum/train", SHA[:DIGEST_CHARS])
    assert logged.dataset.source_type == "hugging_face"
    profile = json.loads(str(logged.dataset.profile))
    assert profile["rows"] == 8 and profile["rows_read"] == 10 and profile["rows_skipped"] == 2
    assert profile["revision"] == "0a1b2c" and profile["content_sha256"] == SHA
    with pytest.raises(RuntimeError, match="no active MLflow run"):
        log_dataset(snapshot_dataset(snapshot), "training")
    with pytest.raises(FileNotFoundError, match="no data report beside the snapshot"):
        snapshot_dataset(tmp_path)
