"""KFP component `register_student`: register one sweep student in the MLflow registry, not promoted."""

from kfp import dsl

from otdistill.steps.runtime import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, packages_to_install=[], install_kfp_package=False)
def register_student(
    config: str,
    train_data: dsl.Input[dsl.Dataset],
    validation_data: dsl.Input[dsl.Dataset],
    student_model: dsl.Input[dsl.Model],
    record: dsl.Input[dsl.Artifact],
    row: dsl.Output[dsl.Artifact],
) -> None:
    """Log the student as a served pyfunc and register it as a version of `<registered model>-<variant>`
    (no alias), with the training split's content hash (`train_data`'s report) as lineage; `row` is the
    row's record with the version: what `aggregate_sweep` collects. The parent MLflow run is found by the
    pipeline run id (kfp.local 2.17 cannot hand a loop's steps a string output from outside the loop)."""
    from otdistill.sweep.steps import register_student as run_step

    result = run_step(
        config, train_data.path, validation_data.path, student_model.path, record.path, row.path
    )
    row.metadata.update({"model_uri": result["registered"]["uri"], "row": result["row"]})
