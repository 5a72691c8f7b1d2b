"""close_run: ends the parent run by the pipeline's final status, and every step run left open."""

import pytest
from kfp import dsl
from mlflow.tracking import MlflowClient

from otdistill.components.close_run.component import close_run
from otdistill.components.conftest import Env
from otdistill.steps.common import RUN_ID_ENV
from otdistill.tracking import open_pipeline_run, step_run


def _status(state: str, message: str | None = None) -> dsl.PipelineTaskFinalStatus:
    return dsl.PipelineTaskFinalStatus(
        state=state,
        pipeline_job_resource_name="local-pipeline-exit-handler-1",
        pipeline_task_name="exit-handler-1",
        error_code=1 if message else None,
        error_message=message,
    )


def _close(env: Env, state: str, message: str | None = None) -> str:
    tracking = env.cfg.tracking
    result: str = close_run.python_func(
        config=env.section("close_run"),
        pipeline_run_id="placeholder-id",
        experiment=tracking.experiment,
        status=_status(state, message),
    )
    return result


def test_failed_run_ends_failed_with_the_failing_step(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RUN_ID_ENV, "close-failed")
    parent = open_pipeline_run(env.cfg.tracking, "close-failed", pipeline_run_id="close-failed")
    with pytest.raises(ValueError, match="bad rows"), step_run(parent, "prepare_data"):
        raise ValueError("bad rows")
    client = MlflowClient(env.cfg.tracking.tracking_uri)
    # a step whose process was killed outright: its run was never ended
    orphan = client.create_run(
        parent.experiment_id,
        tags={"mlflow.parentRunId": parent.run_id, "otdistill.step": "train_teacher"},
    )

    assert _close(env, "FAILED", "Task exit-handler-1 failed.") == "FAILED"
    run = client.get_run(parent.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["otdistill.failed_step"] == "prepare_data"
    assert run.data.tags["otdistill.error"] == "ValueError: bad rows"
    assert run.data.tags["otdistill.kfp_state"] == "FAILED"
    assert client.get_run(orphan.info.run_id).info.status == "KILLED"


def test_succeeded_run_ends_finished_and_no_parent_is_nothing_to_close(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(RUN_ID_ENV, "close-ok")
    parent = open_pipeline_run(env.cfg.tracking, "close-ok", pipeline_run_id="close-ok")
    assert _close(env, "SUCCEEDED") == "FINISHED"
    run = MlflowClient(env.cfg.tracking.tracking_uri).get_run(parent.run_id)
    assert run.info.status == "FINISHED" and "otdistill.failed_step" not in run.data.tags
    monkeypatch.setenv(RUN_ID_ENV, "never-opened")
    assert _close(env, "FAILED") == ""


def test_the_exit_handler_does_not_import_the_ml_stack() -> None:
    """It must start fast and fit a small CPU pod: no torch or transformers in its process."""
    import subprocess
    import sys

    heavy = "{'torch', 'transformers'}"
    code = f"import sys, otdistill.steps.close_run; print(sorted({heavy} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
