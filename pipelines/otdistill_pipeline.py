"""The otdistill DAG: data -> (teacher SFT) -> teacher cache -> distillation -> evaluation -> registry.

`build_pipeline(cfg)` returns the KFP pipeline for one RunConfig: the per-run knobs are pipeline parameters
(defaults from the config), everything else in the config travels as a compile-time constant, and the
config's `cluster` section becomes Kubernetes settings on each task (see `cluster.py`). Every step runs
inside a `dsl.ExitHandler` whose exit task, `close_run`, ends the run's MLflow runs however the run ended.
"""

from typing import Any

from kfp import dsl

from otdistill.components.cache_teacher.component import cache_teacher
from otdistill.components.close_run.component import close_run
from otdistill.components.distill_student.component import distill_student
from otdistill.components.evaluate.component import evaluate
from otdistill.components.open_run.component import open_run
from otdistill.components.prepare_data.component import prepare_data
from otdistill.components.reference_model.component import reference_model
from otdistill.components.register_and_promote.component import register_and_promote
from otdistill.components.score_champion.component import score_champion
from otdistill.components.train_sft.component import train_sft
from otdistill.config import RunConfig, pipeline_parameter_defaults
from otdistill.pipelines.cluster import apply_cluster_settings
from otdistill.training.config import TrainConfig

PIPELINE_NAME = "otdistill"


def validation_input(section: TrainConfig, validation_data: Any) -> dict[str, Any]:
    """A training task's `validation_data` input, only when its section validates during training: an
    input is part of the step's cache key, so new validation rows re-run no training that does not read
    them."""
    return {"validation_data": validation_data} if section.validates else {}


def build_pipeline(cfg: RunConfig) -> Any:
    """The KFP pipeline (a GraphComponent) for `cfg`, ready for kfp.compiler or kfp.local."""
    d = pipeline_parameter_defaults(cfg)
    base_config = cfg.to_json()
    cluster = cfg.cluster
    caching = cfg.steps.enable_caching

    def configure(task: Any, step: str, *, cache: bool = True) -> Any:
        task.set_caching_options(enable_caching=caching and cache)
        task.set_display_name(step.replace("_", "-"))
        return apply_cluster_settings(task, step, cluster, cfg.tracking.tracking_uri)

    @dsl.pipeline(
        name=cfg.name or PIPELINE_NAME,
        description="Cross-tokenizer distillation of a teacher LLM into a student LLM with MultiLevelOT.",
    )
    def otdistill_pipeline(
        teacher_source: str = d["teacher_source"],
        teacher_revision: str = d["teacher_revision"],
        student_source: str = d["student_source"],
        student_revision: str = d["student_revision"],
        task: str = d["task"],
        data_source: str = d["data_source"],
        data_revision: str = d["data_revision"],
        train_rows: int = d["train_rows"],
        validation_rows: int = d["validation_rows"],
        loss: str = d["loss"],
        loss_alpha: float = d["loss_alpha"],
        loss_beta: float = d["loss_beta"],
        loss_gamma: float = d["loss_gamma"],
        distill_steps: int = d["distill_steps"],
        distill_learning_rate: float = d["distill_learning_rate"],
        teacher_sft_steps: int = d["teacher_sft_steps"],
        teacher_sft_learning_rate: float = d["teacher_sft_learning_rate"],
        sft_baseline_steps: int = d["sft_baseline_steps"],
        sft_baseline_learning_rate: float = d["sft_baseline_learning_rate"],
        experiment: str = d["experiment"],
        registered_model_name: str = d["registered_model_name"],
        promotion_metric: str = d["promotion_metric"],
        promotion_margin: float = d["promotion_margin"],
    ) -> None:
        # The exit handler: runs after every other step, also when one failed, and ends the run's MLflow
        # runs (the parent and any step run left open). It can take no upstream output, only parameters.
        closing = close_run(
            config=cfg.section_json("close_run"),
            pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            experiment=experiment,
        )
        configure(closing, "close_run", cache=False)
        with dsl.ExitHandler(closing):
            opened = open_run(
                base_config=base_config,
                pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                pipeline_run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                teacher_source=teacher_source,
                teacher_revision=teacher_revision,
                student_source=student_source,
                student_revision=student_revision,
                task=task,
                data_source=data_source,
                data_revision=data_revision,
                train_rows=train_rows,
                validation_rows=validation_rows,
                loss=loss,
                loss_alpha=loss_alpha,
                loss_beta=loss_beta,
                loss_gamma=loss_gamma,
                distill_steps=distill_steps,
                distill_learning_rate=distill_learning_rate,
                teacher_sft_steps=teacher_sft_steps,
                teacher_sft_learning_rate=teacher_sft_learning_rate,
                sft_baseline_steps=sft_baseline_steps,
                sft_baseline_learning_rate=sft_baseline_learning_rate,
                experiment=experiment,
                registered_model_name=registered_model_name,
                promotion_metric=promotion_metric,
                promotion_margin=promotion_margin,
            )
            # Opens this run's parent MLflow run: never cached (its inputs include the run id).
            configure(opened, "open_run", cache=False)

            # One task per split: the validation rows have their own cache key and never touch train_data.
            data = configure(
                prepare_data(config=opened.outputs["prepare_data"], split="train"), "prepare_data"
            )
            validation = configure(
                prepare_data(config=opened.outputs["prepare_validation_data"], split="validation"),
                "prepare_validation_data",
            )
            train_data = data.outputs["data"]
            validation_data = validation.outputs["data"]

            # Optional steps are compile-time switches: a skipped step is not in the DAG (no GPU pod for it);
            # kfp.local cannot run dsl.OneOf, so If/Else branches would not run locally either.
            if cfg.steps.skip_teacher_sft:
                teacher_task = configure(
                    reference_model(config=opened.outputs["reference_model"], role="teacher"),
                    "reference_model",
                )
            else:
                teacher_task = configure(
                    train_sft(
                        config=opened.outputs["train_teacher"],
                        role="teacher",
                        train_data=train_data,
                        **validation_input(cfg.teacher_sft, validation_data),
                    ),
                    "train_teacher",
                )
            teacher = teacher_task.outputs["model"]
            if cfg.steps.skip_sft_baseline:
                baseline_task = configure(
                    reference_model(config=opened.outputs["reference_model"], role="student"),
                    "reference_model",
                )
            else:
                baseline_task = configure(
                    train_sft(
                        config=opened.outputs["train_sft_baseline"],
                        role="student",
                        train_data=train_data,
                        **validation_input(cfg.sft_baseline, validation_data),
                    ),
                    "train_sft_baseline",
                )
            baseline = baseline_task.outputs["model"]

            cached = configure(
                cache_teacher(
                    config=opened.outputs["cache_teacher"], teacher_model=teacher, train_data=train_data
                ),
                "cache_teacher",
            )
            distilled = configure(
                distill_student(
                    config=opened.outputs["distill_student"],
                    teacher_model=teacher,
                    teacher_cache=cached.outputs["teacher_cache"],
                    train_data=train_data,
                    **validation_input(cfg.distill, validation_data),
                ),
                "distill_student",
            )
            scored = configure(
                evaluate(
                    config=opened.outputs["evaluate"],
                    validation_data=validation_data,
                    teacher_model=teacher,
                    baseline_model=baseline,
                    student_model=distilled.outputs["student_model"],
                    baseline_label="base_student" if cfg.steps.skip_sft_baseline else "sft_baseline",
                ),
                "evaluate",
            )
            # The champion `open_run` found, on this run's rows (or its recorded score): cached per champion.
            champion = configure(
                score_champion(
                    config=opened.outputs["score_champion"],
                    validation_data=validation_data,
                    champion=opened.outputs["champion"],
                ),
                "score_champion",
            )
            # The gate compares against the registry as it is now: never cached. Idempotent per run itself.
            configure(
                register_and_promote(
                    config=opened.outputs["register_and_promote"],
                    parent_run_id=opened.outputs["parent_run_id"],
                    data_hash=data.outputs["Output"],
                    validation_data=validation_data,
                    student_model=distilled.outputs["student_model"],
                    scores=scored.outputs["scores"],
                    champion_scores=champion.outputs["champion_scores"],
                ),
                "register_and_promote",
                cache=False,
            )

    return otdistill_pipeline
