"""KFP component `prepare_data`: validate one split's task rows and snapshot them (train or validation).

The pipeline runs it twice, as `prepare_data` (train) and `prepare_validation_data`, so the validation
rows have a cache key of their own and cannot change the training data artifact.
"""

from kfp import dsl

from otdistill.steps.common import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, packages_to_install=[], install_kfp_package=False)
def prepare_data(
    config: str,
    split: str,
    data: dsl.Output[dsl.Dataset],
    data_report: dsl.Output[dsl.Artifact],
    metrics: dsl.Output[dsl.Metrics],
) -> str:
    """Read, validate and tokenise-check the `split` ("train" or "validation"); returns its content hash."""
    from otdistill.steps.prepare_data import prepare_data as run_step

    result = run_step(config_json=config, split=split, data_dir=data.path, report_dir=data_report.path)
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    # Also as a file: kfp.local treats an output artifact without a file as missing (no cache hit).
    import json
    import os

    os.makedirs(os.path.dirname(metrics.path), exist_ok=True)
    with open(metrics.path, "w", encoding="utf-8") as fh:
        json.dump(result.metrics, fh, indent=2, sort_keys=True)
    data.metadata.update(result.metadata)
    return result.data_hash
