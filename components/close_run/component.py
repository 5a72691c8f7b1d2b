"""KFP component `close_run`: the exit handler; ends the run's MLflow runs, however the pipeline ended."""

from kfp import dsl

from otdistill.steps.runtime import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, packages_to_install=[], install_kfp_package=False)
def close_run(
    config: str,
    pipeline_run_id: str,
    experiment: str,
    status: dsl.PipelineTaskFinalStatus,
) -> str:
    """End the parent MLflow run (FINISHED, FAILED with the failing step and its error as tags, or KILLED)
    and every step run still open (KILLED); returns the parent's final status ("" when there was none).

    status: filled in by KFP (the exit task of `dsl.ExitHandler`), not passed by the pipeline.
    """
    from otdistill.steps.close_run import close_run as run_step

    closed = run_step(
        config_json=config,
        experiment=experiment,
        pipeline_run_id=pipeline_run_id,
        state=status.state,
        failed_task=status.pipeline_task_name or "",
        error_message=status.error_message or "",
    )
    return closed.status if closed is not None else ""
