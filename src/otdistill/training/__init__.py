"""The training core for both stages: teacher SFT and student distillation, on transformers' Trainer.

    from otdistill.training import TrainConfig, train_teacher_sft, distill_student
    teacher = train_teacher_sft(TrainConfig(output_dir="out/teacher", lora=True), "pypi:gemma-3-270m", data)
    student = distill_student(TrainConfig(output_dir="out/student"), "pypi:smollm2-135m-instruct",
                              teacher.model_dir, data)     # loss="multilevel_ot", live teacher by default

The distillation objective is a loss plug-in (`DistillationObjective`) of `DistillationTrainer`, a
`transformers.Trainer` subclass: the loop, mixed precision, accumulation, schedulers, DDP/FSDP and
checkpoint contents are the Trainer's; checkpoints are made atomic and mirrored to S3 here.
"""

from typing import TYPE_CHECKING

from otdistill.lazy import lazy_exports

if TYPE_CHECKING:
    from otdistill.training.checkpoints import (
        S3CheckpointStore,
        latest_complete_checkpoint,
        resolve_resume,
        verify_checkpoint,
    )
    from otdistill.training.config import LOSS_NAMES, TrainConfig
    from otdistill.training.errors import (
        NonFiniteGradientError,
        NonFiniteLossError,
        TrainingError,
        TrainingOOMError,
    )
    from otdistill.training.inputs import TrainCollator
    from otdistill.training.objective import DistillationObjective, LossTerm, TeacherOutputs
    from otdistill.training.precision import PrecisionChoice, choose_precision
    from otdistill.training.runner import (
        TrainResult,
        check_loss_for_tokenizers,
        distill_student,
        same_tokenizer,
        train_teacher_sft,
    )
    from otdistill.training.teacher import CachedTeacher, LiveTeacher
    from otdistill.training.trainer import DistillationTrainer

__all__ = [
    "LOSS_NAMES",
    "CachedTeacher",
    "DistillationObjective",
    "DistillationTrainer",
    "LiveTeacher",
    "LossTerm",
    "NonFiniteGradientError",
    "NonFiniteLossError",
    "PrecisionChoice",
    "S3CheckpointStore",
    "TeacherOutputs",
    "TrainCollator",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "TrainingOOMError",
    "check_loss_for_tokenizers",
    "choose_precision",
    "distill_student",
    "latest_complete_checkpoint",
    "resolve_resume",
    "same_tokenizer",
    "train_teacher_sft",
    "verify_checkpoint",
]

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(__name__, __file__, __all__)
