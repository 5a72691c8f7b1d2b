"""KFP component `distill_student`: cross-tokenizer distillation of the student from the cached teacher."""

from kfp import dsl

from otdistill.steps.runtime import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, packages_to_install=[], install_kfp_package=False)
def distill_student(
    config: str,
    teacher_model: dsl.Input[dsl.Model],
    teacher_cache: dsl.Input[dsl.Dataset],
    train_data: dsl.Input[dsl.Dataset],
    student_model: dsl.Output[dsl.Model],
    metrics: dsl.Output[dsl.Metrics],
    validation_data: dsl.Input[dsl.Dataset] = None,  # type: ignore[assignment]  # only when validating
) -> None:
    """Train the student with the configured loss (MultiLevelOT by default); writes a Model artifact."""
    from otdistill.steps.distill_student import distill_student as run_step
    from otdistill.steps.kfp_outputs import log_metrics

    result = run_step(
        config_json=config,
        teacher_dir=teacher_model.path,
        cache_dir=teacher_cache.path,
        train_dir=train_data.path,
        model_dir=student_model.path,
        validation_dir=validation_data.path if validation_data is not None else None,
    )
    student_model.metadata.update(result.metadata)
    log_metrics(metrics, result.metrics)  # each as a KFP metric, and the file kfp.local needs
