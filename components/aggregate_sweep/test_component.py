"""aggregate_sweep: from every row's record (both loops' collected artifacts), the table with each
variant's difference from the SFT row and its interval, on the parent MLflow run and as the step's
Markdown; rows whose outcome is known (one variant better on every row, one worse on every row)."""

import json
from pathlib import Path

import pytest
from kfp import dsl
from mlflow.tracking import MlflowClient

from otdistill.components.aggregate_sweep.component import aggregate_sweep
from otdistill.components.conftest import Env
from otdistill.tracking import open_pipeline_run
from otdistill.tracking.metric_names import sweep_metric
from tests.sweep_records import row_record

IDS = [f"ex{i}" for i in range(12)]


def _row(env: Env, variant: str, seed: int, shift: float, metric: str) -> dsl.Artifact:
    """A row's record as register_student writes it (the teacher's as evaluate_student writes it): each
    example's score is 0.3 + its offset + `shift`."""
    scores = {i: 0.3 + 0.01 * (n % 5) + shift for n, i in enumerate(IDS)}
    artifact = env.artifact(dsl.Artifact, f"aggregate-{variant}-s{seed}")
    Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
    Path(artifact.path).write_text(
        json.dumps(row_record(variant, seed, scores, metric, sft=variant == "sft"))
    )
    return artifact


def test_aggregate_sweep_writes_the_table_and_intervals_to_the_parent_run(env: Env) -> None:
    metric = env.cfg.tracking.promotion_metric
    parent = open_pipeline_run(env.cfg.tracking, "aggregate-test", pipeline_run_id="aggregate-test")
    sft = [_row(env, "sft", s, 0.01 * s, metric) for s in (0, 1)]
    distilled = [_row(env, "better", s, 0.1 + 0.01 * s, metric) for s in (0, 1)]
    distilled += [_row(env, "worse", s, -0.05, metric) for s in (0, 1)]
    table = env.artifact(dsl.Markdown, "aggregate-table")
    aggregate_sweep.python_func(
        config=env.section("register_and_promote"),
        parent_run_id=parent.run_id,
        sft_rows=sft,
        distill_rows=distilled,
        teacher_row=_row(env, "teacher", 0, 0.2, metric),
        table=table,
    )
    text = Path(table.path).read_text()
    assert f"### validation: {metric} x100 on 12 rows" in text
    assert "| sft | 2 |" in text and "(the reference)" in text
    assert "| better | 2 |" in text and "+10.00 [+10.00, +10.00] | better than SFT |" in text
    assert "| worse | 2 |" in text and "-5.50 [-5.50, -5.50] | worse than SFT |" in text
    assert "| teacher (after SFT; not a student) | 1 |" in text and "a lead of +19.50" in text
    assert "at least 5 is asked: met." in text  # the pilot
    client = MlflowClient(env.cfg.tracking.tracking_uri)
    run = client.get_run(parent.run_id)
    assert run.data.metrics[sweep_metric("validation", "better", "diff")] == pytest.approx(0.1)
    assert run.data.metrics[sweep_metric("validation", "worse", "high")] == pytest.approx(-0.055)
    assert run.data.metrics[sweep_metric("validation", "sft", "mean")] == pytest.approx(
        0.3225
    )  # 0.3 + mean offset 0.0175 + mean shift 0.005
    assert "| better | 2 |" in run.data.tags["otdistill.sweep.table"]
    logged = {Path(f.path).name for f in client.list_artifacts(parent.run_id, "sweep")}
    assert logged == {
        "table.md", "table.csv", "row_differences.csv", "comparisons.json", "pairwise.json", "plot.png",
        "records",
    }  # fmt: skip
    records = {Path(f.path).name for f in client.list_artifacts(parent.run_id, "sweep/records")}
    rows = {f"{v}-s{s}.json" for v in ("sft", "better", "worse") for s in (0, 1)}
    assert records == rows | {"teacher.json"}
    assert "| worse | better | -15.50 [-15.50, -15.50] | worse than better |" in text
