"""register_student: registers one sweep student as a version of `<model>-<variant>` with its row, seed,
scores and lineage as tags and no alias; a retry in the same pipeline run finds that version."""

import json
from pathlib import Path

from kfp import dsl
from mlflow.tracking import MlflowClient

from otdistill.components.conftest import Env, Upstream
from otdistill.components.evaluate_student.component import evaluate_student
from otdistill.components.register_student.component import register_student
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


def test_register_student_registers_the_row_without_promoting_it(env: Env, upstream: Upstream) -> None:
    record = _record(env, upstream)
    assert set(json.loads(Path(record.path).read_text())["splits"]) == {"validation"}
    outputs = []
    for attempt in (1, 2):  # the second call: a retry of the step in the same pipeline run
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
    (first, meta), (again, meta_again) = outputs
    assert first == again and meta == meta_again  # one version, found again
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
    score = first["splits"]["validation"]["models"]["uld-s1"]["rougeLsum"]
    assert float(tags["otdistill.eval.validation.rougeLsum"]) == score
    assert len(client.search_model_versions("name='comp-uld'")) == 1
