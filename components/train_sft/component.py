"""KFP component `train_sft`: supervised fine-tuning of the teacher, or of the student (baseline)."""

from kfp import dsl

from otdistill.steps.runtime import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, packages_to_install=[], install_kfp_package=False)
def train_sft(
    config: str,
    role: str,
    train_data: dsl.Input[dsl.Dataset],
    model: dsl.Output[dsl.Model],
    metrics: dsl.Output[dsl.Metrics],
    validation_data: dsl.Input[dsl.Dataset] = None,  # type: ignore[assignment]  # only when validating
) -> None:
    """Fine-tune the `role` model ("teacher" or "student") on the training split; writes a Model artifact."""
    from otdistill.steps.kfp_outputs import log_metrics
    from otdistill.steps.train_sft import train_sft as run_step

    result = run_step(
        config_json=config,
        role=role,
        train_dir=train_data.path,
        model_dir=model.path,
        validation_dir=validation_data.path if validation_data is not None else None,
    )
    model.metadata.update(result.metadata)
    log_metrics(metrics, result.metrics)  # each as a KFP metric, and the file kfp.local needs
