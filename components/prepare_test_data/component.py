"""KFP component `prepare_test_data`: a sweep's held-out rows, snapshot once for every student."""

from kfp import dsl

from otdistill.steps.runtime import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, packages_to_install=[], install_kfp_package=False)
def prepare_test_data(
    config: str,
    source: str,
    split: str,
    rows: int,
    data: dsl.Output[dsl.Dataset],
    data_report: dsl.Output[dsl.Artifact],
) -> str:
    """Validate and snapshot `split` of `source` (same task and cuts as the validation rows); `source` ""
    writes an empty artifact (no test rows); `rows` 0 takes them all. Returns the rows' content hash."""
    from otdistill.sweep.steps import prepare_test_data as run_step

    marker = run_step(config, source, split, rows, data.path, data_report.path)
    data.metadata.update({"rows": str(marker["rows"]), "sha256": marker["sha256"], "source": source})
    return str(marker["sha256"])
