"""register_student: registers one sweep student as a version of `<model>-<variant>` with its row, seed,
scores, lineage and weights hash as tags and no alias; a retry, in the same pipeline run or a later one that
resumes the sweep (another parent run), finds that version by its row and weights."""

import json
from pathlib import Path

import pytest
from kfp import dsl
from mlflow.tracking import MlflowClient

from otdistill.components.conftest import Env, Upstream
from otdistill.components.evaluate_student.component import evaluate_student
from otdistill.components.register_student.component import register_student
from otdistill.models.weights_hash import WEIGHTS_SHA256_TAG, weights_sha256
from otdistill.steps.runtime import RUN_ID_ENV
from otdistill.sweep.config import Variant
from otdistill.sweep.rows import Row


def _record(env: Env, upstream: Upstream) -> dsl.Artifact:
    """The row's record as evaluate_student writes it (validation rows only: no test data given)."""
    no_test = env.no_test_data("register-student-no-test")
    record = env.artifact(dsl.Artifact, "register-student-record")
    evaluate_student.python_func(
        config=env.section("evaluate"),
        validation_data=upstream.validation,
        train_data=upstream.train,
        test_data=no_test,
        student_model=upstream.distilled,
        row=Row(Variant("uld", {"distill.loss": "uld"}), 1).item(),
        record=record,
        report=env.artifact(dsl.HTML, "register-student-report"),
        metrics=env.artifact(dsl.Metrics, "register-student-metrics"),
    )
    return record


def test_register_student_registers_the_row_without_promoting_it(
    env: Env, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = _record(env, upstream)
    assert set(json.loads(Path(record.path).read_text())["splits"]) == {"validation"}
    outputs = []
    # the second call: a retry of the step in the same pipeline run; the third: a later run of the sweep
    # (its own parent MLflow run) whose student is a step-cache hit, the same weights
    for attempt, run_id in ((1, None), (2, None), (3, "register-student-resumed")):
        if run_id is not None:
            monkeypatch.setenv(RUN_ID_ENV, run_id)
        row = env.artifact(dsl.Artifact, f"register-student-row-{attempt}")
        register_student.python_func(
            config=env.section("register_and_promote"),
            train_data=upstream.train,
            validation_data=upstream.validation,
            student_model=upstream.distilled,
            record=record,
            row=row,
        )
        outputs.append((json.loads(Path(row.path).read_text()), dict(row.metadata)))
    (first, meta), (again, meta_again), (resumed, meta_resumed) = outputs
    assert first == again == resumed and meta == meta_again == meta_resumed  # one version, found again
    assert first["registered"] == {"name": "comp-uld", "version": "1", "uri": "models:/comp-uld/1"}
    assert meta == {"model_uri": "models:/comp-uld/1", "row": "uld-s1"}
    client = MlflowClient(env.cfg.tracking.tracking_uri)
    version = client.get_model_version("comp-uld", "1")
    assert not version.aliases  # the sweep measures; only the main pipeline's gate promotes
    tags = version.tags
    assert (tags["otdistill.sweep.row"], tags["otdistill.sweep.variant"], tags["otdistill.sweep.seed"]) == (
        "uld-s1",
        "uld",
        "1",
    )
    assert tags["otdistill.lineage.data_hash"] == upstream.data_hash
    assert tags[WEIGHTS_SHA256_TAG] == weights_sha256(upstream.distilled.path)
    score = first["splits"]["validation"]["models"]["uld-s1"]["rougeLsum"]
    assert float(tags["otdistill.eval.validation.rougeLsum"]) == score
    assert len(client.search_model_versions("name='comp-uld'")) == 1
