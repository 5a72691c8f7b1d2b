"""Step `distill_student`: train the student with cross-entropy + the distillation loss (teacher cache)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from otdistill.losses.registry import LossSpec, get_loss
from otdistill.models import ResolvedModel, resolve_model
from otdistill.steps.common import (
    copy_model,
    log_training_datasets,
    resolve_model_artifact,
    snapshot_data_config,
    validation_snapshot_config,
    write_model_info,
)
from otdistill.steps.prologue import step_prologue
from otdistill.steps.resume import step_checkpoints
from otdistill.steps.train_sft import TrainStepResult
from otdistill.teacher_cache.teacher_files import cached_teacher
from otdistill.training.launch import TrainingJob, run_training, training_processes

log = logging.getLogger(__name__)


def distill_student(
    config_json: str,
    teacher_dir: str | Path | None,
    cache_dir: str | Path,
    train_dir: str | Path,
    model_dir: str | Path,
    validation_dir: str | Path | None = None,
) -> TrainStepResult:
    """Distil the configured student from the teacher; the distilled model is written to `model_dir`.

    A loss that can read the teacher cache (the loss registry: MultiLevelOT, ULD) reads it from the one
    built by `cache_teacher`, which training verifies
    before its first step against this teacher's revision, the loss settings (k, temperatures), the
    training split's content hash and both tokenizers (`TeacherCache.check_matches`); "kl" needs the live
    teacher. `validation_dir`: the validation snapshot, read when `distill.eval_every_steps` is set; its
    loss is the student's response cross-entropy (the cache holds no validation rows).
    `teacher_dir`: the teacher Model artifact, given only to a loss that needs the live teacher
    (`LossSpec.needs_teacher_model`); otherwise the teacher is the one the cache carries (its tokenizer
    and record: `cached_teacher`), and the step downloads no teacher weights.
    """
    with step_prologue(config_json, "distill_student") as step:
        cfg = step.cfg
        train_cfg = cfg.distill
        spec = get_loss(train_cfg.loss, field="distill.loss")
        teacher = _teacher(spec, teacher_dir, cache_dir)
        if spec.reads_cache:
            train_cfg = dataclasses.replace(
                train_cfg, teacher_source="cache", teacher_cache_uri=str(cache_dir)
            )
        step.run.log_params(train_cfg.to_dict())
        validation = validation_snapshot_config(cfg, train_cfg, validation_dir)
        used_validation = validation_dir if validation is not None else None
        log_training_datasets(cfg, train_dir, used_validation)
        section = cfg.section_json("distill_student")
        with step_checkpoints("distill_student", section, train_dir, used_validation) as checkpoints:
            student = resolve_model(cfg.student)
            train_cfg = checkpoints.for_training(train_cfg, {"base": student, "teacher": teacher})
            log.info(
                "distilling %s from %s with %s (%s steps)",
                student.source,
                teacher.source,
                train_cfg.loss,
                train_cfg.max_steps,
            )
            data = snapshot_data_config(cfg, train_dir, cfg.data.split)
            job = TrainingJob(
                "distill", train_cfg, data, student=student, teacher=teacher, validation=validation
            )
            # cluster.gpus > 1: that many processes through torchrun, rank 0 writing the model
            result = run_training(job, training_processes(cfg.cluster.gpus))
            copy_model(result.model_dir, model_dir)
            metadata = {
                "role": "student",
                "kind": "trained",
                "stage": "distill_student",
                "loss": train_cfg.loss,
                "base_source": student.source,
                "base_revision": student.revision,
                "teacher_source": teacher.source,
                "teacher_revision": teacher.revision,
                "global_step": str(result.global_step),
                "dtype": str(result.record["precision.save_dtype"]),  # the weights' dtype on disk
            }
            write_model_info(Path(model_dir), metadata)
    log.info("distillation done: %s steps, final train loss %.4f", result.global_step, result.train_loss)
    return TrainStepResult.of(metadata, result)


def _teacher(spec: LossSpec, teacher_dir: str | Path | None, cache_dir: str | Path) -> ResolvedModel:
    """The teacher Model artifact when the step got one, else the teacher the cache carries; a loss that
    needs the live teacher without one is refused by name (the pipeline is compiled for the configured
    loss: a run that changes the `loss` parameter to one needing the live teacher must be recompiled)."""
    if teacher_dir is not None:
        return resolve_model_artifact(teacher_dir)
    if spec.needs_teacher_model:
        raise ValueError(
            f"distill.loss {spec.name!r} needs the live teacher, but the distill_student step got no "
            "teacher_model: the pipeline was compiled for a loss that reads the teacher cache; compile "
            f"(or submit) it with distill.loss {spec.name!r} in the config"
        )
    return cached_teacher(cache_dir)
