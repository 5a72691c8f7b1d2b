"""KFP component `open_run`: merge the run's parameters into its config and open the parent MLflow run."""

from typing import NamedTuple

from kfp import dsl

from otdistill.steps.runtime import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, packages_to_install=[], install_kfp_package=False)
def open_run(
    base_config: str,
    pipeline_run_id: str,
    pipeline_run_name: str,
    teacher_source: str,
    teacher_revision: str,
    student_source: str,
    student_revision: str,
    task: str,
    data_source: str,
    data_revision: str,
    train_rows: int,
    validation_rows: int,
    loss: str,
    loss_alpha: float,
    loss_beta: float,
    loss_gamma: float,
    distill_steps: int,
    distill_learning_rate: float,
    teacher_sft_steps: int,
    teacher_sft_learning_rate: float,
    sft_baseline_steps: int,
    sft_baseline_learning_rate: float,
    experiment: str,
    registered_model_name: str,
    promotion_metric: str,
    promotion_margin: float,
    run_config: dsl.Output[dsl.Artifact],
) -> NamedTuple(  # type: ignore[valid-type]  # KFP needs the inline form
    "StepConfigs",
    [
        ("prepare_data", str),
        ("prepare_validation_data", str),
        ("reference_model", str),
        ("train_teacher", str),
        ("train_sft_baseline", str),
        ("cache_teacher", str),
        ("distill_student", str),
        ("evaluate", str),
        ("score_champion", str),
        ("register_and_promote", str),
        ("parent_run_id", str),
        ("champion", str),
    ],
):
    """Apply the pipeline parameters to `base_config`, validate it, open the parent MLflow run.

    Returns one config JSON per step holding only what that step reads, so each step's cache key moves
    only when its own inputs move, plus the parent MLflow run id and the champion model version's URI
    ("" when there is none) that `score_champion` scores.
    """
    from otdistill.steps.open_run import open_run as run_step

    # Every other argument is a pipeline parameter (otdistill.config.PIPELINE_PARAMETERS, checked there).
    params = dict(locals())
    for key in ("base_config", "pipeline_run_id", "pipeline_run_name", "run_config", "run_step"):
        params.pop(key, None)
    result = run_step(
        base_config=base_config,
        params=params,
        pipeline_run_id=pipeline_run_id,
        pipeline_run_name=pipeline_run_name,
        config_path=run_config.path,
    )
    steps = result.step_configs
    return (  # KFP reads a NamedTuple return by position, in the order declared above
        steps["prepare_data"],
        steps["prepare_validation_data"],
        steps["reference_model"],
        steps["train_teacher"],
        steps["train_sft_baseline"],
        steps["cache_teacher"],
        steps["distill_student"],
        steps["evaluate"],
        steps["score_champion"],
        steps["register_and_promote"],
        result.parent_run_id,
        result.champion,
    )
