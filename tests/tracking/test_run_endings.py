"""Every run ends: a step run records its error, SIGTERM ends it KILLED, and `close_pipeline_run` (the
pipeline's exit handler) ends the parent and any step run left open (SQLite store)."""

from __future__ import annotations

import os
import signal
import time

import pytest
from mlflow.tracking import MlflowClient

from otdistill.tracking import (
    StepTerminated,
    TrackingConfig,
    close_pipeline_run,
    open_pipeline_run,
    step_run,
)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> TrackingConfig:
    store = tmp_path_factory.mktemp("run-endings")
    return TrackingConfig(
        tracking_uri=f"sqlite:///{store}/mlflow.db",
        artifact_location=(store / "artifacts").as_uri(),
        experiment="run-endings",
    )


def test_sigterm_ends_the_step_run_killed(config: TrackingConfig) -> None:
    """SIGTERM (what a pod eviction, deadline or cancel sends) in a step: its run ends KILLED, exit 143."""
    parent = open_pipeline_run(config, "sigterm", pipeline_run_id="kfp-sigterm")
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(StepTerminated) as raised, step_run(parent, "train_teacher") as step:
        # never send SIGTERM to the test process without the step's handler in place
        assert signal.getsignal(signal.SIGTERM) not in (before, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # the handler raises at the next bytecode
    assert raised.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before
    run = MlflowClient(config.tracking_uri).get_run(step.run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["otdistill.error"].startswith("StepTerminated: terminated by SIGTERM")
    closed = close_pipeline_run(config, "kfp-sigterm", "FAILED")
    assert closed is not None and closed.failed_step == "train_teacher" and closed.killed_steps == ()


def test_close_ends_open_steps_and_names_the_first_failure(config: TrackingConfig) -> None:
    parent = open_pipeline_run(config, "fails", pipeline_run_id="kfp-fails")
    with pytest.raises(KeyError), step_run(parent, "evaluate"):
        raise KeyError("rougeLsum")
    client = MlflowClient(config.tracking_uri)
    orphan = client.create_run(
        parent.experiment_id, tags={"mlflow.parentRunId": parent.run_id, "otdistill.step": "distill_student"}
    )
    closed = close_pipeline_run(config, "kfp-fails", "FAILED", kfp_task="exit-handler-1")
    assert closed is not None and closed.status == "FAILED" and closed.killed_steps == ("distill_student",)
    run = client.get_run(parent.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["otdistill.failed_step"] == "evaluate"
    assert run.data.tags["otdistill.error"] == "KeyError: 'rougeLsum'"
    assert client.get_run(orphan.info.run_id).info.status == "KILLED"
    assert not client.search_runs([parent.experiment_id], filter_string="attributes.status = 'RUNNING'")


def test_close_without_a_failed_step_run_uses_kfp_status(config: TrackingConfig) -> None:
    failed = open_pipeline_run(config, "early", pipeline_run_id="kfp-early")
    closed = close_pipeline_run(config, "kfp-early", "FAILED", kfp_task="exit-handler-1", kfp_error="boom")
    assert closed is not None and (closed.failed_step, closed.error) == ("exit-handler-1", "boom")
    cancelled = open_pipeline_run(config, "cancelled", pipeline_run_id="kfp-cancelled")
    assert close_pipeline_run(config, "kfp-cancelled", "CANCELLED") is not None
    client = MlflowClient(config.tracking_uri)
    assert client.get_run(failed.run_id).info.status == "FAILED"
    assert client.get_run(cancelled.run_id).info.status == "KILLED"
    assert close_pipeline_run(config, "kfp-never-opened", "FAILED") is None
