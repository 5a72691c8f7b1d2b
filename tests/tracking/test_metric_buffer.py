"""The run's metric buffer on a real local MLflow store (SQLite) and against a port nothing listens on.

The outage itself (a real `mlflow server` stopped for a minute mid-training) is in
tests/servers/test_training_outage.py; here: order and MLflow's batch limits, a refused item that must not
hold back the rest, what an unreachable server leaves unsent, and the step run's flush on both exits.
"""

from __future__ import annotations

import uuid

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from otdistill.tracking import TrackingConfig, start_pipeline_run, step_run
from otdistill.tracking.metric_buffer import (
    RunLogBuffer,
    UnsentMetricsError,
    close_run_buffer,
    run_buffer,
)
from tests.servers.processes import free_port


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> TrackingConfig:
    store = tmp_path_factory.mktemp("metric-buffer")  # one SQLite store: creating one takes seconds
    return TrackingConfig(
        tracking_uri=f"sqlite:///{store}/mlflow.db",
        artifact_location=(store / "artifacts").as_uri(),
        experiment="metric-buffer",
    )


def _run_id(config: TrackingConfig) -> str:
    mlflow.set_tracking_uri(config.tracking_uri)
    client = MlflowClient(config.tracking_uri)
    experiment = client.create_experiment(uuid.uuid4().hex, artifact_location=config.artifact_location)
    return str(client.create_run(experiment).info.run_id)


def test_everything_queued_arrives_in_order_across_batch_limits(config: TrackingConfig) -> None:
    run_id = _run_id(config)
    buffer = run_buffer(run_id)
    for step in range(1, 301):  # 1500 metrics: two log_batch calls at least
        buffer.log_metrics({f"m{i}": step * 10 + i for i in range(5)}, step=step)
    buffer.log_params({f"p{i}": str(i) for i in range(150)})  # over the 100 params of one call
    assert close_run_buffer(run_id) == 0
    client = MlflowClient(config.tracking_uri)
    for i in range(5):
        history = client.get_metric_history(run_id, f"m{i}")
        assert [(m.step, m.value) for m in history] == [(s, s * 10 + i) for s in range(1, 301)]
    params = client.get_run(run_id).data.params
    assert params == {f"p{i}": str(i) for i in range(150)}
    assert buffer.sent == 1650 and buffer.rejected == 0 and buffer.failed_attempts == 0


def test_a_refused_item_is_dropped_alone(config: TrackingConfig) -> None:
    run_id = _run_id(config)
    client = MlflowClient(config.tracking_uri)
    client.log_param(run_id, "seed", "1")
    buffer = RunLogBuffer(run_id, client)
    buffer.log_params({"seed": "2", "lr": "0.001"})  # MLflow refuses to change a logged param
    buffer.log_metrics({"loss": 1.5}, step=1)
    assert buffer.flush(timeout_s=60) == 0
    run = client.get_run(run_id)
    assert run.data.params == {"seed": "1", "lr": "0.001"}
    assert run.data.metrics == {"loss": 1.5}
    assert buffer.rejected == 1 and buffer.sent == 2


def test_an_unreachable_server_leaves_everything_queued_and_says_what(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    mlflow.set_tracking_uri(f"http://127.0.0.1:{free_port()}")
    buffer = run_buffer("0123456789abcdef")
    for step in (3, 4, 5):
        buffer.log_metrics({"loss": 1.0 / step, "lr": 0.1}, step=step)  # returns: nothing is sent here
    assert buffer.unsent == 6
    assert buffer.flush(timeout_s=1.5) == 6
    assert buffer.failed_attempts >= 1 and buffer.sent == 0
    with pytest.raises(UnsentMetricsError, match=r"6 metric\(s\) of steps 3-5 and 0 param\(s\)"):
        close_run_buffer("0123456789abcdef", timeout_s=0.5)
    assert close_run_buffer("0123456789abcdef") == 0  # closed and forgotten


def test_step_run_sends_the_buffer_before_it_ends_on_success_and_failure(config: TrackingConfig) -> None:
    with start_pipeline_run(config, "buffered") as parent, step_run(parent, "train") as ok:
        for step in range(1, 4):
            run_buffer(ok.run_id).log_metrics({"train/loss": float(step)}, step=step)
    with (
        pytest.raises(RuntimeError, match="diverged"),
        start_pipeline_run(config, "buffered-fails") as parent,
        step_run(parent, "train") as failed,
    ):
        run_buffer(failed.run_id).log_metrics({"train/loss": 9.0}, step=1)
        raise RuntimeError("diverged")
    client = MlflowClient(config.tracking_uri)
    assert [m.step for m in client.get_metric_history(ok.run_id, "train/loss")] == [1, 2, 3]
    assert client.get_run(ok.run_id).info.status == "FINISHED"
    assert [m.value for m in client.get_metric_history(failed.run_id, "train/loss")] == [9.0]
    assert client.get_run(failed.run_id).info.status == "FAILED"
