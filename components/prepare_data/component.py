"""KFP component `prepare_data`: validate the task rows and snapshot the train / validation splits."""

from kfp import dsl

from otdistill.steps.common import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, packages_to_install=[], install_kfp_package=False)
def prepare_data(
    config: str,
    train_data: dsl.Output[dsl.Dataset],
    validation_data: dsl.Output[dsl.Dataset],
    data_report: dsl.Output[dsl.Artifact],
    metrics: dsl.Output[dsl.Metrics],
) -> str:
    """Read, validate and tokenise-check both splits; returns the training data's content hash."""
    from otdistill.steps.prepare_data import prepare_data as run_step

    result = run_step(
        config_json=config,
        train_dir=train_data.path,
        validation_dir=validation_data.path,
        report_dir=data_report.path,
    )
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    # Also as a file: kfp.local treats an output artifact without a file as missing (no cache hit).
    import json
    import os

    os.makedirs(os.path.dirname(metrics.path), exist_ok=True)
    with open(metrics.path, "w", encoding="utf-8") as fh:
        json.dump(result.metrics, fh, indent=2, sort_keys=True)
    train_data.metadata.update(result.train_metadata)
    validation_data.metadata.update(result.validation_metadata)
    return result.data_hash
