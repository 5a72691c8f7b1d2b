"""Step `train_sft`: supervised fine-tuning of the teacher (teacher SFT) or of the student (SFT baseline)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from otdistill.models import resolve_model
from otdistill.steps.common import (
    copy_model,
    load_step_config,
    model_spec,
    pipeline_run,
    setup_logging,
    snapshot_data_config,
    step_tags,
    write_model_info,
)
from otdistill.steps.resume import step_checkpoints
from otdistill.tracking.runs import step_run
from otdistill.training.launch import TrainingJob, run_training, training_processes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainStepResult:
    metadata: dict[str, str]
    metrics: dict[str, float]


def train_sft(config_json: str, role: str, train_dir: str | Path, model_dir: str | Path) -> TrainStepResult:
    """Fine-tune the `role` model on the snapshot's training split and write it to `model_dir`.

    The teacher uses `teacher_sft`, the student `sft_baseline` (always loss "none": the baseline the
    distilled student must beat). Checkpoints go to the run-scoped, fingerprinted location a retry of the
    run resumes from (`otdistill.steps.resume`); only the final model lands in the artifact.
    """
    setup_logging()
    cfg = load_step_config(config_json)
    spec = model_spec(cfg, role)
    stage = "train_teacher" if role == "teacher" else "train_sft_baseline"
    train_cfg = cfg.teacher_sft if role == "teacher" else cfg.sft_baseline
    data = snapshot_data_config(cfg, train_dir, cfg.data.split)
    parent = pipeline_run(cfg.tracking, cfg.name)
    with step_checkpoints(stage, cfg.section_json(stage), train_dir) as checkpoints:
        train_cfg = dataclasses.replace(train_cfg, loss="none")
        with step_run(
            parent, stage, params=train_cfg.to_dict(), tags={**step_tags(cfg), "otdistill.role": role}
        ):
            resolved = resolve_model(spec)
            train_cfg = checkpoints.for_training(train_cfg, {"base": resolved})
            log.info("%s: fine-tuning %s for %s steps", stage, resolved.source, train_cfg.max_steps)
            if role == "teacher":
                job = TrainingJob("teacher_sft", train_cfg, data, teacher=resolved)
            else:
                job = TrainingJob("distill", train_cfg, data, student=resolved)
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
        }
        write_model_info(Path(model_dir), metadata)
    metrics = {"train_loss": float(result.train_loss), "global_step": float(result.global_step)}
    log.info("%s done: %s steps, final train loss %.4f", stage, result.global_step, result.train_loss)
    return TrainStepResult(metadata=metadata, metrics=metrics)
