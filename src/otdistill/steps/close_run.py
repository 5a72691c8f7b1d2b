"""Step `close_run`: the pipeline's exit handler; ends the run's MLflow runs whatever happened to the run.

It runs after every other step, also when one failed (`dsl.ExitHandler`), and learns how the pipeline
ended from KFP (`dsl.PipelineTaskFinalStatus`, passed in by the component). Which step failed and why it
reads from MLflow, where each step run recorded its own error: KFP's final status names only the exit
handler's group, and under kfp.local its message is just "Task exit-handler-1 failed.".

A light step: it imports MLflow and the tracking code only (not `otdistill.config`, which brings torch and
transformers), so it starts in seconds and needs no more than a small CPU pod.
"""

from __future__ import annotations

import json
import os
from typing import Any

from otdistill.steps.runtime import RUN_ID_ENV, setup_logging
from otdistill.tracking.config import TrackingConfig
from otdistill.tracking.runs import ClosedPipelineRun, close_pipeline_run


def close_run(
    config_json: str,
    experiment: str,
    pipeline_run_id: str,
    state: str,
    failed_task: str = "",
    error_message: str = "",
) -> ClosedPipelineRun | None:
    """End the parent MLflow run of this pipeline run and any step run still open.

    config_json: the compiled config's `close_run` sections (`RunConfig.section_json`: name, tracking);
    experiment: the run's pipeline parameter, applied on top as `open_run` applies it (it maps one to one
    onto `tracking.experiment`), so this finds the run `open_run` opened. The pipeline run id comes from
    the environment when set (as for every step), else from KFP's placeholder. state, failed_task,
    error_message: the pipeline's final status from KFP.
    """
    setup_logging()
    section: dict[str, Any] = dict(json.loads(config_json)["tracking"])
    section.update(experiment=experiment)
    tracking = TrackingConfig(**section)
    run_id = os.environ.get(RUN_ID_ENV, "").strip() or pipeline_run_id
    return close_pipeline_run(tracking, run_id, state, kfp_task=failed_task, kfp_error=error_message)
