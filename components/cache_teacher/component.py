"""KFP component `cache_teacher`: run the teacher once over the training split and store its top-k."""

from kfp import dsl

from otdistill.steps.runtime import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, packages_to_install=[], install_kfp_package=False)
def cache_teacher(
    config: str,
    teacher_model: dsl.Input[dsl.Model],
    train_data: dsl.Input[dsl.Dataset],
    teacher_cache: dsl.Output[dsl.Dataset],
) -> None:
    """Write the teacher's MultiLevelOT inputs for every training example, so distillation never loads it."""
    from otdistill.teacher_cache.step import cache_teacher_step as run_step

    teacher_cache.metadata.update(
        run_step(
            config_json=config,
            teacher_dir=teacher_model.path,
            train_dir=train_data.path,
            cache_dir=teacher_cache.path,
        )
    )
