"""KFP component `train_sft`: supervised fine-tuning of the teacher, or of the student (baseline)."""

from kfp import dsl

from otdistill.steps.common import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, packages_to_install=[], install_kfp_package=False)
def train_sft(
    config: str,
    role: str,
    train_data: dsl.Input[dsl.Dataset],
    model: dsl.Output[dsl.Model],
    metrics: dsl.Output[dsl.Metrics],
) -> None:
    """Fine-tune the `role` model ("teacher" or "student") on the training split; writes a Model artifact."""
    from otdistill.steps.train_sft import train_sft as run_step

    result = run_step(
        config_json=config,
        role=role,
        train_dir=train_data.path,
        model_dir=model.path,
    )
    model.metadata.update(result.metadata)
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    # Also as a file: kfp.local treats an output artifact without a file as missing (no cache hit).
    import json
    import os

    os.makedirs(os.path.dirname(metrics.path), exist_ok=True)
    with open(metrics.path, "w", encoding="utf-8") as fh:
        json.dump(result.metrics, fh, indent=2, sort_keys=True)
