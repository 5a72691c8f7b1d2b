"""The otdistill DAG: data -> (teacher SFT) -> teacher cache -> distillation -> evaluation -> registry.

`build_pipeline(cfg)` returns the KFP pipeline for one RunConfig: the per-run knobs are pipeline parameters
(defaults from the config), everything else in the config travels as a compile-time constant, and the
config's `cluster` section becomes Kubernetes settings on each task (see `cluster.py`). Every step runs
inside a `dsl.ExitHandler` whose exit task, `close_run`, ends the run's MLflow runs however the run ended.

The trunk (`open_run`, both data splits, the teacher and its cache, inside the exit handler) is shared with
the sweep pipeline (`sweep_pipeline.py`) through `build_dag`: each pipeline adds its own steps to it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
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
from otdistill.components.teacher_answers.component import teacher_answers
from otdistill.components.train_sft.component import train_sft
from otdistill.config import PIPELINE_PARAMETERS, RunConfig, pipeline_parameter_defaults
from otdistill.losses.registry import get_loss
from otdistill.pipelines.cluster import apply_cluster_settings
from otdistill.training.config import TrainConfig

PIPELINE_NAME = "otdistill"


class Configure:
    """Caching, display name and cluster settings of one task, from the config (every task goes through)."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg

    def __call__(self, task: Any, step: str, *, cache: bool = True, display: str | None = None) -> Any:
        """`step`: the step's name in the config (cluster settings, timeouts); `display`: its name in the
        UI and on the terminal (default: `step` with dashes)."""
        task.set_caching_options(enable_caching=self.cfg.steps.enable_caching and cache)
        task.set_display_name(display or step.replace("_", "-"))
        return apply_cluster_settings(task, step, self.cfg.cluster, self.cfg.tracking.tracking_uri)


@dataclass(frozen=True)
class Trunk:
    """The tasks every pipeline of this project starts with, and their outputs the other steps take."""

    opened: Any  # open_run: one config JSON per step, the parent run id, the champion
    # the training split's task, whose output "Output" is its content hash: prepare_data (train), or
    # teacher_answers when the students learn the teacher's answers (`targets.source: teacher`)
    data: Any
    train_data: Any
    validation_data: Any
    teacher: Any  # the teacher Model artifact (tuned, or the reference when teacher SFT is skipped)
    teacher_cache: Any


def validation_input(section: TrainConfig, validation_data: Any) -> dict[str, Any]:
    """A training task's `validation_data` input, only when its section validates during training: an
    input is part of the step's cache key, so new validation rows re-run no training that does not read
    them."""
    return {"validation_data": validation_data} if section.validates else {}


def teacher_model_input(losses: Iterable[str], teacher: Any) -> dict[str, Any]:
    """`distill_student`'s `teacher_model` input, only when one of the `losses` it may train with needs
    the live teacher (`LossSpec.needs_teacher_model`): a loss reading the teacher cache gets what it needs
    of the teacher from the cache artifact, and KFP's launcher then downloads no teacher weights."""
    live = any(get_loss(name, field="distill.loss").needs_teacher_model for name in losses)
    return {"teacher_model": teacher} if live else {}


def _trunk(cfg: RunConfig, params: Mapping[str, Any], configure: Configure) -> Trunk:
    opened = open_run(
        base_config=cfg.to_json(),
        pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        pipeline_run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
        **{name: params[name] for name in PIPELINE_PARAMETERS},
    )
    # Opens this run's parent MLflow run: never cached (its inputs include the run id).
    configure(opened, "open_run", cache=False)

    # One task per split: the validation rows have their own cache key and never touch train_data.
    data = configure(prepare_data(config=opened.outputs["prepare_data"], split="train"), "prepare_data")
    validation = configure(
        prepare_data(config=opened.outputs["prepare_validation_data"], split="validation"),
        "prepare_validation_data",
    )
    train_data = data.outputs["data"]

    # Optional steps are compile-time switches: a skipped step is not in the DAG (no GPU pod for it);
    # kfp.local cannot run dsl.OneOf, so If/Else branches would not run locally either.
    if cfg.steps.skip_teacher_sft:
        teacher_task = configure(
            reference_model(config=opened.outputs["reference_model"], role="teacher"), "reference_model"
        )
    else:
        teacher_task = configure(
            train_sft(
                config=opened.outputs["train_teacher"],
                role="teacher",
                train_data=train_data,
                **validation_input(cfg.teacher_sft, validation.outputs["data"]),
            ),
            "train_teacher",
        )
    teacher = teacher_task.outputs["model"]
    if cfg.targets.from_teacher:
        # The authors' recipe: the teacher's answers replace the gold targets for the cache and every
        # student. Its compiled settings: none of eval / targets is a run parameter (open_run's outputs
        # stay as they were); the run-time sections are those of prepare_data.
        data = configure(
            teacher_answers(
                config=opened.outputs["prepare_data"],
                settings=cfg.section_json("teacher_answers"),
                teacher_model=teacher,
                train_data=train_data,
            ),
            "teacher_answers",
        )
        train_data = data.outputs["data"]
    cached = configure(
        cache_teacher(config=opened.outputs["cache_teacher"], teacher_model=teacher, train_data=train_data),
        "cache_teacher",
    )
    return Trunk(
        opened, data, train_data, validation.outputs["data"], teacher, cached.outputs["teacher_cache"]
    )


def build_dag(
    cfg: RunConfig,
    description: str,
    body: Callable[[Trunk, Mapping[str, Any], Configure], None],
    extra_parameters: Mapping[str, Any] | None = None,
) -> Any:
    """A KFP pipeline whose parameters are PIPELINE_PARAMETERS (defaults from `cfg`) plus
    `extra_parameters` (name -> default), whose tasks run inside the exit handler `close_run`, starting
    with the trunk; `body(trunk, parameters, configure)` adds the pipeline's own tasks."""
    defaults = {**pipeline_parameter_defaults(cfg), **(extra_parameters or {})}
    signature = inspect.Signature(
        [
            inspect.Parameter(
                name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=value, annotation=type(value)
            )
            for name, value in defaults.items()
        ]
    )
    configure = Configure(cfg)

    def pipeline_func(*args: Any, **kwargs: Any) -> None:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        params = dict(bound.arguments)
        # The exit handler: runs after every other step, also when one failed, and ends the run's MLflow
        # runs (the parent and any step run left open). It can take no upstream output, only parameters.
        closing = close_run(
            config=cfg.section_json("close_run"),
            pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            experiment=params["experiment"],
        )
        configure(closing, "close_run", cache=False)
        with dsl.ExitHandler(closing):
            body(_trunk(cfg, params, configure), params, configure)

    # KFP reads the pipeline's parameters from the function's signature.
    pipeline_func.__signature__ = signature  # type: ignore[attr-defined]
    return dsl.pipeline(name=cfg.name or PIPELINE_NAME, description=description)(pipeline_func)


def build_pipeline(cfg: RunConfig) -> Any:
    """The KFP pipeline (a GraphComponent) for `cfg`, ready for kfp.compiler or kfp.local."""

    def body(trunk: Trunk, params: Mapping[str, Any], configure: Configure) -> None:
        opened = trunk.opened
        if cfg.steps.skip_sft_baseline:
            baseline_task = configure(
                reference_model(config=opened.outputs["reference_model"], role="student"), "reference_model"
            )
        else:
            baseline_task = configure(
                train_sft(
                    config=opened.outputs["train_sft_baseline"],
                    role="student",
                    train_data=trunk.train_data,
                    **validation_input(cfg.sft_baseline, trunk.validation_data),
                ),
                "train_sft_baseline",
            )
        distilled = configure(
            distill_student(
                config=opened.outputs["distill_student"],
                teacher_cache=trunk.teacher_cache,
                train_data=trunk.train_data,
                **validation_input(cfg.distill, trunk.validation_data),
                **teacher_model_input([cfg.distill.loss], trunk.teacher),
            ),
            "distill_student",
        )
        scored = configure(
            evaluate(
                config=opened.outputs["evaluate"],
                validation_data=trunk.validation_data,
                train_data=trunk.train_data,
                teacher_model=trunk.teacher,
                baseline_model=baseline_task.outputs["model"],
                student_model=distilled.outputs["student_model"],
                baseline_label="base_student" if cfg.steps.skip_sft_baseline else "sft_baseline",
            ),
            "evaluate",
        )
        # The champion `open_run` found, on this run's rows (or its recorded score): cached per champion.
        champion = configure(
            score_champion(
                config=opened.outputs["score_champion"],
                validation_data=trunk.validation_data,
                champion=opened.outputs["champion"],
            ),
            "score_champion",
        )
        # The gate compares against the registry as it is now: never cached. Idempotent per run itself.
        configure(
            register_and_promote(
                config=opened.outputs["register_and_promote"],
                parent_run_id=opened.outputs["parent_run_id"],
                data_hash=trunk.data.outputs["Output"],
                validation_data=trunk.validation_data,
                student_model=distilled.outputs["student_model"],
                scores=scored.outputs["scores"],
                champion_scores=champion.outputs["champion_scores"],
            ),
            "register_and_promote",
            cache=False,
        )

    return build_dag(
        cfg, "Cross-tokenizer distillation of a teacher LLM into a student LLM with MultiLevelOT.", body
    )
