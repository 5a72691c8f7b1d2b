"""KFP component `teacher_answers`: the teacher answers every training row (few-shot when configured), and
a new training snapshot whose targets are its answers replaces the gold one for the cache and the students.
"""

from kfp import dsl

from otdistill.steps.runtime import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, packages_to_install=[], install_kfp_package=False)
def teacher_answers(
    config: str,
    settings: str,
    teacher_model: dsl.Input[dsl.Model],
    train_data: dsl.Input[dsl.Dataset],
    data: dsl.Output[dsl.Dataset],
    data_report: dsl.Output[dsl.Artifact],
    metrics: dsl.Output[dsl.Metrics],
) -> str:
    """Answer the rows of `train_data` with `teacher_model`; returns the new split's content hash.

    `config`: the run-time sections (open_run's `prepare_data` config); `settings`: the compiled eval and
    targets sections (`RunConfig.section_json("teacher_answers")`).
    """
    from otdistill.steps.kfp_outputs import log_metrics
    from otdistill.steps.teacher_answers import teacher_answers as run_step

    result = run_step(
        config_json=config,
        settings_json=settings,
        teacher_dir=teacher_model.path,
        train_dir=train_data.path,
        data_dir=data.path,
        report_dir=data_report.path,
    )
    log_metrics(metrics, result.metrics)  # each as a KFP metric, and the file kfp.local needs
    data.metadata.update(result.metadata)
    return result.data_hash
