"""`TrainConfig`: every knob of one training stage, YAML-friendly, with the MultiLevelOT paper's defaults.

One config serves both stages: the teacher's SFT reads the optimisation, checkpoint and LoRA fields and
ignores the distillation ones; the student's distillation reads all of them. Values are checked here, when
the config is built (from YAML or code), so that a bad value fails before a GPU is allocated.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from otdistill.losses.registry import get_loss, loss_names

LossName = str  # a name in the loss registry (`otdistill.losses.registry`), checked by `validate`
TeacherSourceKind = Literal["live", "cache"]  # where the teacher side comes from (teacher.TeacherSource)
Precision = Literal["auto", "bf16", "fp32"]
SaveDtype = Literal["auto", "bf16", "fp16", "fp32"]
Distributed = Literal["ddp", "fsdp"]
TeacherSharding = Literal["replicate", "fsdp"]

LOSS_NAMES: tuple[str, ...] = loss_names()  # the built-in losses; `validate` asks the registry itself
VALIDATION_FIELDS: tuple[str, ...] = (
    "eval_every_steps",
    "early_stopping_patience",
    "early_stopping_min_delta",
    "keep_best_checkpoint",
)


def _finite(value: float) -> bool:
    """Not inf or nan (an int always is; math.isfinite would overflow on a huge one)."""
    return isinstance(value, int) or math.isfinite(value)


@dataclass
class TrainConfig:
    """One training stage (teacher SFT or student distillation).

    Distillation term (`loss`), a name in the loss registry (`otdistill.losses.registry`): "multilevel_ot"
    (default), "uld", "kl" (teacher and student must share one tokenizer) or "none" (the SFT baseline:
    student cross-entropy only). The training loss is the student's
    response cross-entropy plus that term; its parameters default to the paper's values (top_k=50, tau=1,
    tau_sd=2, epsilon=0.1, 20 Sinkhorn iterations, alpha=0.15, beta=0.1, gamma=0.1; ULD weight 0.15).

    Teacher (`teacher_source`): "live" loads the teacher model, frozen, in eval mode, without gradients, on
    the student's device; "cache" reads its top-k from `teacher_cache_uri` (no teacher model in memory).
    Under torchrun, `teacher_sharding="fsdp"` shards a live teacher over the ranks (FSDP2); "replicate"
    keeps a full copy per process.

    Data parallel (`distributed`, under torchrun: the pipeline's training steps launch `cluster.gpus`
    processes, `otdistill.training.launch`): "ddp" replicates the trained model; "fsdp" shards it
    with accelerate's FSDP2 (GPUs only: on CPU the run refuses it).

    Optimisation: `max_steps` optimizer steps, or, with `max_steps: 0` (the explicit "epoch-based"
    setting), `num_epochs` passes over the data (then > 0; a fraction is allowed). A negative `max_steps` is
    refused, not read as "epochs": a typo must not turn a 5-step smoke test into a full epoch. With
    `max_steps` > 0, `num_epochs` is not used. AdamW with `learning_rate` (finite, > 0), `lr_scheduler`,
    `warmup_steps` (a fraction of the run when < 1), `weight_decay`, `max_grad_norm`; a global batch of
    per_device_batch_size x gradient_accumulation_steps x world size. Every number must be finite.

    Checkpoints: every `save_steps` steps into `output_dir`/checkpoint-N (atomically; see checkpoints.py),
    mirrored to `checkpoint_uri` (s3://bucket/prefix) when set; `resume` continues from the newest complete
    checkpoint found locally or in S3. `checkpoint_fingerprint` (set by the pipeline steps, see
    `otdistill.fingerprint`; leave it unset in configs) is recorded in every checkpoint, and resume then
    takes only checkpoints that record the same one: others are refused and moved aside (checkpoints.py).
    `precision`: "auto" is bf16 on a CUDA GPU that supports it, else fp32; under bf16 the base of a LoRA or
    FSDP run is loaded in bf16 (`PrecisionChoice.trained_dtype`).
    `save_dtype`: the dtype the final model is written in, the one it is served in ("auto": bf16 when the
    stage trained under bf16, fp32 otherwise, so a CPU run's model is bit-identical to its fp32 weights):
    a 7B teacher saved in bf16 is half the bytes every later step downloads (`PrecisionChoice.save_dtype`).
    `deterministic` turns on torch's deterministic algorithms (and the cuBLAS workspace setting on GPUs).

    Validation during training (off by default): every `eval_every_steps` optimizer steps the trained
    model's response cross-entropy on the run's validation rows is logged (`val/loss`; the same measure for
    teacher SFT, the SFT baseline and distillation: the teacher cache holds no validation rows).
    `early_stopping_patience` > 0 stops training after that many evaluations in a row that do not improve
    the best validation loss by more than `early_stopping_min_delta`; `keep_best_checkpoint` ends the run
    with the weights of the checkpoint with the lowest validation loss (checkpoints are saved every
    `save_steps`, which must then be a multiple of `eval_every_steps`) and never rotates it away.
    `trainer_args`: any other `transformers.TrainingArguments` field, passed through as is (checked
    against TrainingArguments' fields; the fields otdistill sets itself are refused, naming the setting
    to use instead: `otdistill.training.arguments`).
    """

    # distillation objective
    loss: LossName = "multilevel_ot"
    top_k: int = 50
    temperature: float = 1.0
    sinkhorn_temperature: float = 2.0
    sinkhorn_epsilon: float = 0.1
    sinkhorn_iters: int = 20
    alpha: float = 0.15
    beta: float = 0.1
    gamma: float = 0.1
    detach_sinkhorn_plan: bool = False
    uld_weight: float = 0.15
    kl_weight: float = 1.0
    kl_temperature: float = 1.0
    ce_weight: float = 1.0

    # teacher
    teacher_source: TeacherSourceKind = "live"
    teacher_cache_uri: str | None = None
    teacher_sharding: TeacherSharding = "replicate"

    # LoRA (teacher SFT or student); merged into the base weights when the stage ends
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"])

    # optimisation
    max_steps: int = 1000
    num_epochs: float = 1.0
    learning_rate: float = 2e-5
    lr_scheduler: str = "cosine"
    warmup_steps: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    optimizer: str = "adamw_torch"
    per_device_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    dataloader_num_workers: int = 0

    # logging, checkpoints, reproducibility
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int | None = 3
    output_dir: str = "outputs/train"
    checkpoint_uri: str | None = None
    s3_endpoint_url: str | None = None
    checkpoint_fingerprint: str | None = None
    resume: bool = True
    seed: int = 42
    deterministic: bool = False
    precision: Precision = "auto"
    save_dtype: SaveDtype = "auto"
    distributed: Distributed = "ddp"
    progress_bar: bool = True

    # validation during training (0: off), early stopping (0: off), the best checkpoint
    eval_every_steps: int = 0
    early_stopping_patience: int = 0
    early_stopping_min_delta: float = 0.0
    keep_best_checkpoint: bool = False

    # any other transformers.TrainingArguments field (not one otdistill sets: see training/arguments.py)
    trainer_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field for any value that cannot work."""
        spec = get_loss(self.loss, field="TrainConfig.loss")
        choices: dict[str, tuple[str, ...]] = {
            "teacher_source": ("live", "cache"),
            "teacher_sharding": ("replicate", "fsdp"),
            "precision": ("auto", "bf16", "fp32"),
            "save_dtype": ("auto", "bf16", "fp16", "fp32"),
            "distributed": ("ddp", "fsdp"),
        }
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"TrainConfig.{name} must be one of {', '.join(allowed)}; got {value!r}")
        positive = {
            "top_k": self.top_k,
            "temperature": self.temperature,
            "sinkhorn_temperature": self.sinkhorn_temperature,
            "sinkhorn_epsilon": self.sinkhorn_epsilon,
            "sinkhorn_iters": self.sinkhorn_iters,
            "kl_temperature": self.kl_temperature,
            "learning_rate": self.learning_rate,
            "per_device_batch_size": self.per_device_batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "logging_steps": self.logging_steps,
            "save_steps": self.save_steps,
            "lora_r": self.lora_r,
        }
        for name, value in positive.items():
            if not (_finite(value) and value > 0):
                raise ValueError(f"TrainConfig.{name} must be > 0 and finite, got {value!r}")
        non_negative = {
            "alpha": self.alpha,
            "beta": self.beta,
            "gamma": self.gamma,
            "uld_weight": self.uld_weight,
            "kl_weight": self.kl_weight,
            "ce_weight": self.ce_weight,
            "warmup_steps": self.warmup_steps,
            "weight_decay": self.weight_decay,
            "max_grad_norm": self.max_grad_norm,
            "lora_dropout": self.lora_dropout,
            "dataloader_num_workers": self.dataloader_num_workers,
            "eval_every_steps": self.eval_every_steps,
            "early_stopping_patience": self.early_stopping_patience,
            "early_stopping_min_delta": self.early_stopping_min_delta,
        }
        for name, value in non_negative.items():
            if not (_finite(value) and value >= 0):
                raise ValueError(f"TrainConfig.{name} must be >= 0 and finite, got {value!r}")
        if self.max_steps < 0:
            raise ValueError(
                f"TrainConfig.max_steps must be >= 0, got {self.max_steps} (0 trains for num_epochs epochs)"
            )
        if not (_finite(self.num_epochs) and self.num_epochs >= 0):
            raise ValueError(f"TrainConfig.num_epochs must be >= 0 and finite, got {self.num_epochs!r}")
        if self.max_steps == 0 and self.num_epochs == 0:
            raise ValueError(
                "TrainConfig: max_steps is 0 (epoch-based) but num_epochs is 0: set max_steps > 0 or "
                "num_epochs > 0"
            )
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise ValueError(
                f"TrainConfig.save_total_limit must be >= 1 or null, got {self.save_total_limit}"
            )
        if self.teacher_source == "cache" and spec.reads_cache and not self.teacher_cache_uri:
            raise ValueError("TrainConfig.teacher_source is 'cache' but teacher_cache_uri is not set")
        if self.teacher_source == "cache" and spec.needs_teacher and not spec.reads_cache:
            raise ValueError(
                f"TrainConfig: loss {self.loss!r} needs the teacher's full distribution, which the top-k "
                "teacher cache does not hold; use teacher_source 'live'"
            )
        if self.lora and self.distributed == "fsdp":
            raise ValueError(
                "TrainConfig: lora with distributed 'fsdp' is not supported (the adapters are merged on one "
                "process at the end); LoRA models are small enough for 'ddp'"
            )
        if self.checkpoint_uri is not None and not self.checkpoint_uri.startswith("s3://"):
            raise ValueError(f"TrainConfig.checkpoint_uri must be an s3:// URI, got {self.checkpoint_uri!r}")
        self._validate_validation()
        if self.trainer_args:
            from otdistill.training.arguments import check_trainer_args  # transformers: only when used

            check_trainer_args(self.trainer_args)

    def _validate_validation(self) -> None:
        """Early stopping and the best checkpoint need the validation loss; the best must be a checkpoint."""
        for name in ("early_stopping_patience", "keep_best_checkpoint"):
            if getattr(self, name) and not self.eval_every_steps:
                raise ValueError(f"TrainConfig.{name} needs the validation loss: set eval_every_steps > 0")
        if self.keep_best_checkpoint and self.save_steps % self.eval_every_steps:
            raise ValueError(
                f"TrainConfig.keep_best_checkpoint: save_steps ({self.save_steps}) must be a multiple of "
                f"eval_every_steps ({self.eval_every_steps}): the best is chosen among saved checkpoints"
            )

    @property
    def validates(self) -> bool:
        """Whether this stage reads validation rows (`eval_every_steps` > 0)."""
        return self.eval_every_steps > 0

    def validation_settings(self) -> dict[str, Any]:
        """The settings that decide which weights a stage ends with besides the optimiser's: the SFT
        baseline must share them with the distillation for a fair comparison (`check_fair_baseline`)."""
        return {name: getattr(self, name) for name in VALIDATION_FIELDS}

    @property
    def needs_teacher(self) -> bool:
        """Whether the distillation term uses the teacher at all ("none" is plain SFT of the student)."""
        return get_loss(self.loss, field="TrainConfig.loss").needs_teacher

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_fair_baseline(baseline: TrainConfig, distill: TrainConfig) -> None:
    """Refuse an SFT baseline validated, stopped early or ending on its best checkpoint differently from the
    distilled student it is compared with: the gate would then compare two selection rules, not two
    losses. Raises ValueError naming each differing field with both values."""
    ours, theirs = baseline.validation_settings(), distill.validation_settings()
    differ = [f"{k} ({ours[k]!r} vs {theirs[k]!r})" for k in VALIDATION_FIELDS if ours[k] != theirs[k]]
    if differ:
        raise ValueError(
            "sft_baseline must validate and stop like distill, so that the comparison stays fair; differs "
            f"in {', '.join(differ)} (sft_baseline vs distill); set the same values in both sections, or "
            "steps.skip_sft_baseline: true"
        )
