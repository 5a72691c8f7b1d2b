"""KFP component `evaluate`: score teacher, SFT baseline student and distilled student on the same rows."""

from kfp import dsl

from otdistill.steps.runtime import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, packages_to_install=[], install_kfp_package=False)
def evaluate(
    config: str,
    validation_data: dsl.Input[dsl.Dataset],
    train_data: dsl.Input[dsl.Dataset],
    teacher_model: dsl.Input[dsl.Model],
    baseline_model: dsl.Input[dsl.Model],
    student_model: dsl.Input[dsl.Model],
    baseline_label: str,
    scores: dsl.Output[dsl.Artifact],
    report: dsl.Output[dsl.HTML],
    metrics: dsl.Output[dsl.Metrics],
) -> None:
    """Generate on the validation split with each model; writes scores JSON, an HTML report and metrics.

    baseline_label: "sft_baseline" for the SFT-trained student, "base_student" when that step is skipped
    (the untuned student is then shown for reference, and the promotion gate has no SFT condition).
    train_data: the training snapshot; a teacher that answered it prompted few-shot is scored with its shots.
    """
    from otdistill.steps.evaluate import evaluate as run_step
    from otdistill.steps.kfp_outputs import log_metrics

    result = run_step(
        config_json=config,
        validation_dir=validation_data.path,
        models={
            "teacher": teacher_model.path,
            baseline_label: baseline_model.path,
            "distilled": student_model.path,
        },
        scores_path=scores.path,
        report_path=report.path,
        teacher="teacher",
        train_dir=train_data.path,
    )
    log_metrics(metrics, result.metrics)  # each as a KFP metric, and the file kfp.local needs
