"""Parent/step run structure on a real local MLflow store (SQLite): statuses, attach, batching, metrics."""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from otdistill.tracking import (
    TrackingConfig,
    TrackingError,
    attach_pipeline_run,
    finish_pipeline_run,
    open_pipeline_run,
    start_pipeline_run,
    step_run,
)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> TrackingConfig:
    store = tmp_path_factory.mktemp("runs-local")
    return TrackingConfig(
        tracking_uri=f"sqlite:///{store}/mlflow.db",
        artifact_location=(store / "artifacts").as_uri(),
        experiment="runs-local",
    )


def test_failing_step_marks_step_and_parent_failed(config: TrackingConfig) -> None:
    with (
        pytest.raises(RuntimeError, match="boom"),
        start_pipeline_run(config, "fails") as parent,
        step_run(parent, "train") as step,
    ):
        raise RuntimeError("boom")
    client = MlflowClient(config.tracking_uri)
    assert client.get_run(step.run_id).info.status == "FAILED"
    assert client.get_run(parent.run_id).info.status == "FAILED"
    assert mlflow.active_run() is None


def test_steps_in_other_processes_attach_to_the_parent(config: TrackingConfig, tmp_path: Path) -> None:
    """What Kubeflow does: open in one pod, attach by id in the next, finish in the last."""
    opened = open_pipeline_run(config, "kfp", pipeline_run_id="kfp-42", params={"seed": 1})
    assert open_pipeline_run(config, "kfp", pipeline_run_id="kfp-42").run_id == opened.run_id
    attached = attach_pipeline_run(config, opened.run_id)
    with step_run(attached, "evaluate") as step:
        step.log_metrics({"rougeLsum": 0.25}, step=3)
    finish_pipeline_run(attached, "FINISHED")
    client = MlflowClient(config.tracking_uri)
    child = client.get_run(step.run_id)
    assert child.data.tags["mlflow.parentRunId"] == opened.run_id
    assert child.data.tags["otdistill.step"] == "evaluate"
    assert client.get_metric_history(step.run_id, "rougeLsum")[0].step == 3
    assert client.get_run(opened.run_id).info.status == "FINISHED"
    with pytest.raises(TrackingError, match="not found"):
        attach_pipeline_run(config, "0" * 32)
    with pytest.raises(ValueError, match="FINISHED, FAILED or KILLED"):
        finish_pipeline_run(attached, "DONE")


def test_large_configs_and_metric_batches(config: TrackingConfig) -> None:
    params = {"block": {f"p{i}": i for i in range(250)}}
    with start_pipeline_run(config, "big", params=params) as parent, step_run(parent, "train") as step:
        step.log_metrics({f"m{i}": float(i) for i in range(1500)}, step=1)
        with pytest.raises(ValueError, match="non-finite"):
            step.log_metrics({"loss": math.nan})
    client = MlflowClient(config.tracking_uri)
    assert len(client.get_run(parent.run_id).data.params) == 250
    logged = client.get_run(step.run_id).data.metrics
    assert len([k for k in logged if not k.startswith("system/")]) == 1500  # system metrics: sampled
    assert "loss" not in client.get_run(step.run_id).data.metrics


def test_step_runs_sample_system_metrics_until_they_end(config: TrackingConfig) -> None:
    """MLflow's system metrics (``system/...``) on a step run, sampled every `system_metrics_interval_s`
    by a thread that ends with the run; the environment is left as it was."""
    fast = dataclasses.replace(config, system_metrics_interval_s=0.1)
    client = MlflowClient(config.tracking_uri)
    before = os.environ.get("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL")
    with start_pipeline_run(fast, "system") as parent, step_run(parent, "train") as step:
        deadline = time.monotonic() + 120
        while not any(k.startswith("system/") for k in client.get_run(step.run_id).data.metrics):
            assert time.monotonic() < deadline, "no system metrics logged within 120 s"
            time.sleep(0.1)
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(
        client.get_run(step.run_id).data.metrics
    )
    assert not [t for t in threading.enumerate() if t.name == "SystemMetricsMonitor"]
    assert os.environ.get("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL") == before
    off = dataclasses.replace(config, system_metrics_interval_s=0.0)
    with start_pipeline_run(off, "no-system") as parent, step_run(parent, "train"):
        assert not [t for t in threading.enumerate() if t.name == "SystemMetricsMonitor"]
