"""KFP component `evaluate_student`: one sweep student on the validation rows and the test rows."""

from kfp import dsl

from otdistill.steps.runtime import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, packages_to_install=[], install_kfp_package=False)
def evaluate_student(
    config: str,
    validation_data: dsl.Input[dsl.Dataset],
    train_data: dsl.Input[dsl.Dataset],
    test_data: dsl.Input[dsl.Dataset],
    student_model: dsl.Input[dsl.Model],
    row: dict,
    record: dsl.Output[dsl.Artifact],
    report: dsl.Output[dsl.HTML],
    metrics: dsl.Output[dsl.Metrics],
) -> None:
    """Generate with the student on each split (`row`: the loop item, `otdistill.sweep.rows.Row.item`);
    the row's record (scores and per-row scores per split),
    the validation HTML report and the scores as KFP metrics (`<split>.<metric>`). `train_data`: the
    training snapshot; the teacher's row, when the teacher answered it prompted few-shot, is scored with
    its shots."""
    from otdistill.steps.kfp_outputs import log_metrics
    from otdistill.sweep.steps import evaluate_student as run_step

    result = run_step(
        config,
        validation_data.path,
        test_data.path,
        student_model.path,
        row=row,
        train_dir=train_data.path,
        record_path=record.path,
        report_path=report.path,
    )
    numbers = {
        f"{split}.{name}": float(value)
        for split, scores in result["splits"].items()
        for name, value in scores["models"][result["row"]].items()
    }
    log_metrics(metrics, numbers)
