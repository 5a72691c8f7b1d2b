"""evaluate_student: scores one sweep student on the validation rows and the held-out test rows; writes
the row's record (what register_student and aggregate_sweep read), the HTML report and KFP metrics."""

import json
from pathlib import Path

from kfp import dsl

from otdistill.components.conftest import SHARED, Env, Upstream
from otdistill.components.evaluate_student.component import evaluate_student
from otdistill.components.prepare_test_data.component import prepare_test_data
from otdistill.sweep.config import Variant
from otdistill.sweep.rows import Row


def test_evaluate_student_scores_both_splits_into_the_row_record(env: Env, upstream: Upstream) -> None:
    test_data = env.artifact(dsl.Dataset, "eval-student-test")
    prepare_test_data.python_func(
        config=env.section("prepare_validation_data"),
        source=str(SHARED),
        split="validation",
        rows=3,
        data=test_data,
        data_report=env.artifact(dsl.Artifact, "eval-student-test-report"),
    )
    record = env.artifact(dsl.Artifact, "eval-student-record")
    report = env.artifact(dsl.HTML, "eval-student-report")
    metrics = env.artifact(dsl.Metrics, "eval-student-metrics")
    evaluate_student.python_func(
        config=env.section("evaluate"),
        validation_data=upstream.validation,
        train_data=upstream.train,
        test_data=test_data,
        student_model=upstream.distilled,
        row=Row(Variant("multilevel_ot", {"distill.loss": "multilevel_ot"}), 2).item(),
        record=record,
        report=report,
        metrics=metrics,
    )
    data = json.loads(Path(record.path).read_text())
    assert (data["row"], data["variant"], data["seed"], data["sft"]) == (
        "multilevel-ot-s2",
        "multilevel_ot",
        2,
        False,
    )
    validation, test = data["splits"]["validation"], data["splits"]["test"]
    assert len(validation["row_scores"]["multilevel-ot-s2"]) == 2  # the run's validation limit
    assert len(test["row_scores"]["multilevel-ot-s2"]) == 3  # the test rows, scored apart
    assert validation["score_key"] != test["score_key"]  # other rows, another key
    assert "<html" in Path(report.path).read_text().lower()
    expected = {
        f"{split}.{name}": value
        for split, scores in data["splits"].items()
        for name, value in scores["models"]["multilevel-ot-s2"].items()
    }
    assert metrics.metadata == expected and "test.rougeLsum" in expected
    assert json.loads(Path(metrics.path).read_text()) == expected
