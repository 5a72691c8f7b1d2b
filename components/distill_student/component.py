"""KFP component `distill_student`: cross-tokenizer distillation of the student from the cached teacher."""

from kfp import dsl

from otdistill.steps.common import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, packages_to_install=[], install_kfp_package=False)
def distill_student(
    config: str,
    teacher_model: dsl.Input[dsl.Model],
    teacher_cache: dsl.Input[dsl.Dataset],
    train_data: dsl.Input[dsl.Dataset],
    student_model: dsl.Output[dsl.Model],
    metrics: dsl.Output[dsl.Metrics],
) -> None:
    """Train the student with the configured loss (MultiLevelOT by default); writes a Model artifact."""
    from otdistill.steps.distill_student import distill_student as run_step

    result = run_step(
        config_json=config,
        teacher_dir=teacher_model.path,
        cache_dir=teacher_cache.path,
        train_dir=train_data.path,
        model_dir=student_model.path,
    )
    student_model.metadata.update(result.metadata)
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    # Also as a file: kfp.local treats an output artifact without a file as missing (no cache hit).
    import json
    import os

    os.makedirs(os.path.dirname(metrics.path), exist_ok=True)
    with open(metrics.path, "w", encoding="utf-8") as fh:
        json.dump(result.metrics, fh, indent=2, sort_keys=True)
