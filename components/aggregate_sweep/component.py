"""KFP component `aggregate_sweep`: the sweep's table, plot and intervals, on the parent MLflow run."""

from kfp import dsl

from otdistill.steps.runtime import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, packages_to_install=[], install_kfp_package=False)
def aggregate_sweep(
    config: str,
    parent_run_id: str,
    sft_rows: dsl.Input[list[dsl.Artifact]],
    distill_rows: dsl.Input[list[dsl.Artifact]],
    teacher_row: dsl.Input[dsl.Artifact],
    table: dsl.Output[dsl.Markdown],
) -> None:
    """Every row's record (`dsl.Collected` from both loops) and the teacher's (`teacher_row`, the pilot:
    its lead over the SFT student) -> the table with each row's difference
    from the SFT row and its bootstrap interval, per-row differences, a plot: on the parent MLflow run
    (`sweep/`), and the table as the step's Markdown artifact (the KFP UI shows it)."""
    import shutil
    import tempfile

    from otdistill.sweep.steps import aggregate_sweep as run_step

    paths = [a.path for a in [*sft_rows, *distill_rows]]
    with tempfile.TemporaryDirectory(prefix="otdistill-sweep-") as tmp:
        result = run_step(config, parent_run_id, paths, tmp, teacher_path=teacher_row.path)
        shutil.copyfile(result["files"]["table"], table.path)
