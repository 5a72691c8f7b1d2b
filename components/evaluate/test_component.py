"""evaluate: scores three models on the same validation rows; scores JSON + HTML report + metrics."""

import json
from pathlib import Path

from kfp import dsl

from otdistill.components.conftest import Env, Upstream
from otdistill.components.evaluate.component import evaluate


def test_evaluate_scores_teacher_baseline_and_distilled(env: Env, upstream: Upstream) -> None:
    scores = env.artifact(dsl.Artifact, "eval-scores")
    report = env.artifact(dsl.HTML, "eval-report")
    metrics = env.artifact(dsl.Metrics, "eval-metrics")
    evaluate.python_func(
        config=env.section("evaluate"),
        validation_data=upstream.validation,
        train_data=upstream.train,
        teacher_model=upstream.teacher,
        baseline_model=upstream.student,
        student_model=upstream.distilled,
        baseline_label="base_student",
        scores=scores,
        report=report,
        metrics=metrics,
    )
    data = json.loads(Path(scores.path).read_text())
    assert set(data["models"]) == {"teacher", "base_student", "distilled"}
    assert data["metric"] == "rougeLsum" and data["rows"] == 2
    assert data["score_key"].startswith("otdistill.scores." + data["data_sha256"][:16])
    assert all(0.0 <= m["rougeLsum"] <= 1.0 for m in data["models"].values())
    assert "<html" in Path(report.path).read_text().lower()
    # One KFP metric per model and metric, and the same numbers in the file kfp.local needs.
    expected = {f"eval/{label}/{k}": value for label, m in data["models"].items() for k, value in m.items()}
    assert metrics.metadata == expected and "eval/distilled/rougeLsum" in expected
    assert json.loads(Path(metrics.path).read_text()) == expected
