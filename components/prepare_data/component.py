"""KFP component `prepare_data`: validate one split's task rows and snapshot them (train or validation).

The pipeline runs it twice, as `prepare_data` (train) and `prepare_validation_data`, so the validation
rows have a cache key of their own and cannot change the training data artifact.
"""

from kfp import dsl

from otdistill.steps.runtime import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, packages_to_install=[], install_kfp_package=False)
def prepare_data(
    config: str,
    split: str,
    data: dsl.Output[dsl.Dataset],
    data_report: dsl.Output[dsl.Artifact],
    metrics: dsl.Output[dsl.Metrics],
) -> str:
    """Read, validate and tokenise-check the `split` ("train" or "validation"); returns its content hash."""
    from otdistill.steps.kfp_outputs import log_metrics
    from otdistill.steps.prepare_data import prepare_data as run_step

    result = run_step(config_json=config, split=split, data_dir=data.path, report_dir=data_report.path)
    log_metrics(metrics, result.metrics)  # each as a KFP metric, and the file kfp.local needs
    data.metadata.update(result.metadata)
    return result.data_hash
