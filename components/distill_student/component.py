"""KFP component `distill_student`: cross-tokenizer distillation of the student from the cached teacher."""

from kfp import dsl

from otdistill.steps.runtime import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, packages_to_install=[], install_kfp_package=False)
def distill_student(
    config: str,
    teacher_cache: dsl.Input[dsl.Dataset],
    train_data: dsl.Input[dsl.Dataset],
    student_model: dsl.Output[dsl.Model],
    metrics: dsl.Output[dsl.Metrics],
    validation_data: dsl.Input[dsl.Dataset] = None,  # type: ignore[assignment]  # only when validating
    teacher_model: dsl.Input[dsl.Model] = None,  # type: ignore[assignment]  # only for a live teacher
) -> None:
    """Train the student with the configured loss (MultiLevelOT by default); writes a Model artifact.

    `teacher_model` is passed only to a loss that needs the live teacher: a loss reading the cache gets
    the teacher's tokenizer and record from `teacher_cache`, and KFP downloads no teacher weights."""
    from otdistill.steps.distill_student import distill_student as run_step
    from otdistill.steps.kfp_outputs import log_metrics

    result = run_step(
        config_json=config,
        teacher_dir=teacher_model.path if teacher_model is not None else None,
        cache_dir=teacher_cache.path,
        train_dir=train_data.path,
        model_dir=student_model.path,
        validation_dir=validation_data.path if validation_data is not None else None,
    )
    student_model.metadata.update(result.metadata)
    log_metrics(metrics, result.metrics)  # each as a KFP metric, and the file kfp.local needs
