"""Step `train_sft`: supervised fine-tuning of the teacher (teacher SFT) or of the student (SFT baseline)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from otdistill.models import resolve_model
from otdistill.steps.common import (
    copy_model,
    log_training_datasets,
    model_spec,
    snapshot_data_config,
    validation_snapshot_config,
    write_model_info,
)
from otdistill.steps.prologue import step_prologue
from otdistill.steps.resume import step_checkpoints
from otdistill.training.launch import TrainingJob, run_training, training_processes
from otdistill.training.runner import TrainResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainStepResult:
    metadata: dict[str, str]
    metrics: dict[str, float]

    @classmethod
    def of(cls, metadata: dict[str, str], result: TrainResult) -> TrainStepResult:
        """The step's outputs: the Model artifact's metadata, and its KFP metrics (the validation loss's
        best, and where training stopped, when the stage validated)."""
        metrics = {"train_loss": float(result.train_loss), "global_step": float(result.global_step)}
        if result.best_val_loss is not None:
            metrics["best_val_loss"] = result.best_val_loss
        if result.validation_history:
            metrics["val_loss"] = result.validation_history[-1]["val/loss"]
        return cls(metadata=metadata, metrics=metrics)


def train_sft(
    config_json: str,
    role: str,
    train_dir: str | Path,
    model_dir: str | Path,
    validation_dir: str | Path | None = None,
) -> TrainStepResult:
    """Fine-tune the `role` model on the snapshot's training split and write it to `model_dir`.

    The teacher uses `teacher_sft`, the student `sft_baseline` (always loss "none": the baseline the
    distilled student must beat). Checkpoints go to the run-scoped, fingerprinted location a retry of the
    run resumes from (`otdistill.steps.resume`); only the final model lands in the artifact.
    `validation_dir`: the validation snapshot, read when the section sets `eval_every_steps` (the
    pipeline passes it only then, so that it enters the step's cache key only then).
    """
    stage = "train_teacher" if role == "teacher" else "train_sft_baseline"
    with step_prologue(config_json, stage, tags={"otdistill.role": role}) as step:
        cfg = step.cfg
        spec = model_spec(cfg, role)
        train_cfg = dataclasses.replace(
            cfg.teacher_sft if role == "teacher" else cfg.sft_baseline, loss="none"
        )
        step.run.log_params(train_cfg.to_dict())
        validation = validation_snapshot_config(cfg, train_cfg, validation_dir)
        data = snapshot_data_config(cfg, train_dir, cfg.data.split)
        used_validation = validation_dir if validation is not None else None
        log_training_datasets(cfg, train_dir, used_validation)
        with step_checkpoints(stage, cfg.section_json(stage), train_dir, used_validation) as checkpoints:
            resolved = resolve_model(spec)
            train_cfg = checkpoints.for_training(train_cfg, {"base": resolved})
            log.info("%s: fine-tuning %s for %s steps", stage, resolved.source, train_cfg.max_steps)
            if role == "teacher":
                job = TrainingJob("teacher_sft", train_cfg, data, teacher=resolved, validation=validation)
            else:
                job = TrainingJob("distill", train_cfg, data, student=resolved, validation=validation)
            # cluster.gpus > 1: that many processes through torchrun, rank 0 writing the model
            result = run_training(job, training_processes(cfg.cluster.gpus))
            copy_model(result.model_dir, model_dir)
            metadata = {
                "role": role,
                "kind": "trained",
                "stage": stage,
                "base_source": resolved.source,
                "base_revision": resolved.revision,
                "global_step": str(result.global_step),
                "dtype": str(result.record["precision.save_dtype"]),  # the weights' dtype on disk
            }
            write_model_info(Path(model_dir), metadata)
    log.info("%s done: %s steps, final train loss %.4f", stage, result.global_step, result.train_loss)
    return TrainStepResult.of(metadata, result)
