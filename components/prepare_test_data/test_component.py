"""prepare_test_data: snapshots held-out rows like the validation rows (cut to `rows`), or writes an
empty artifact when no source is given; its output hash is the rows' content hash."""

import json
from pathlib import Path

from kfp import dsl

from otdistill.components.conftest import SHARED, Env
from otdistill.components.prepare_test_data.component import prepare_test_data
from otdistill.sweep.steps import read_test_marker


def test_prepare_test_data_snapshots_the_rows_or_marks_none(env: Env) -> None:
    data = env.artifact(dsl.Dataset, "test-data")
    report = env.artifact(dsl.Artifact, "test-data-report")
    digest = prepare_test_data.python_func(
        config=env.section("prepare_validation_data"),
        source=str(SHARED),
        split="validation",
        rows=3,
        data=data,
        data_report=report,
    )
    marker = read_test_marker(data.path)
    assert marker == {"source": str(SHARED), "split": "validation", "rows": 3, "sha256": digest}
    assert len(digest) == 64 and data.metadata["rows"] == "3" and data.metadata["sha256"] == digest
    reported = json.loads((Path(report.path) / "data_report.json").read_text())["test"]
    assert reported["content_sha256"] == digest and reported["rows_kept"] == 3

    empty = env.artifact(dsl.Dataset, "test-data-none")
    none = prepare_test_data.python_func(
        config=env.section("prepare_validation_data"),
        source="",
        split="test",
        rows=0,
        data=empty,
        data_report=env.artifact(dsl.Artifact, "test-data-none-report"),
    )
    assert none == "" and read_test_marker(empty.path)["rows"] == 0 and empty.metadata["rows"] == "0"
