"""`TrainConfig` -> `transformers.TrainingArguments` from one declared table, plus `trainer_args` passthrough.

Each TrainingArguments field otdistill sets is declared once, here, with why:

* `MAPPED`: a `TrainConfig` field under our name -> the TrainingArguments field (renamed where transformers'
  name is longer or older), with a transform where the meaning differs (our `max_steps: 0` is "epochs",
  theirs is -1);
* `FIXED`: values otdistill's training relies on, whatever the config says (reporting and progress are
  ours, the collator's dict is the contract, a NaN is never averaged away);
* `DERIVED`: set from the precision, the launch and the validation settings (`derived_arguments`).

`trainer_args` (a training section's mapping) passes any other TrainingArguments field through, checked
against the real dataclass's fields; the fields above are refused, naming the setting that owns them, so a
passthrough can never silently fight a setting the rest of otdistill (fingerprints, resume, the promotion
gate's fair baseline) reads from the config.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from transformers import TrainingArguments

if TYPE_CHECKING:  # TrainConfig.validate imports this module (for trainer_args)
    from otdistill.training.config import TrainConfig


@dataclass(frozen=True)
class Mapped:
    """One TrainConfig field -> one TrainingArguments field (`theirs` defaults to the same name)."""

    ours: str
    theirs: str = ""
    transform: Callable[[Any], Any] | None = None

    @property
    def target(self) -> str:
        return self.theirs or self.ours

    def value(self, config: TrainConfig) -> Any:
        raw = getattr(config, self.ours)
        return self.transform(raw) if self.transform else raw


def _steps_or_epochs(max_steps: int) -> int:
    """Our `max_steps: 0` means "train num_epochs epochs"; transformers says that with -1."""
    return max_steps if max_steps > 0 else -1


MAPPED: tuple[Mapped, ...] = (
    Mapped("output_dir"),
    Mapped("per_device_batch_size", "per_device_train_batch_size"),
    Mapped("gradient_accumulation_steps"),
    Mapped("max_steps", transform=_steps_or_epochs),
    Mapped("num_epochs", "num_train_epochs"),
    Mapped("learning_rate"),
    Mapped("lr_scheduler", "lr_scheduler_type"),
    Mapped("warmup_steps"),
    Mapped("weight_decay"),
    Mapped("max_grad_norm"),
    Mapped("optimizer", "optim"),
    Mapped("gradient_checkpointing", "activation_checkpointing"),
    Mapped("logging_steps"),
    Mapped("save_steps"),
    Mapped("save_total_limit"),
    Mapped("seed"),
    Mapped("seed", "data_seed"),  # one seed: data order follows the run's seed
    Mapped("deterministic", "full_determinism"),
    Mapped("dataloader_num_workers"),
)

FIXED: dict[str, Any] = {
    "logging_strategy": "steps",
    "logging_nan_inf_filter": False,  # a NaN stops the run (DistillationTrainer), it is never averaged away
    "save_strategy": "steps",
    "ddp_find_unused_parameters": False,
    "remove_unused_columns": False,  # the collator's dict is the contract, not the model's signature
    "report_to": "none",  # MLflow through ProgressAndMetricsCallback and the run's metric buffer
    "disable_tqdm": True,  # one progress bar, ours
    "include_num_input_tokens_seen": "no",
}

# Set from the precision choice, the launch and the validation settings; the TrainConfig field that owns each.
DERIVED: dict[str, str] = {
    "bf16": "precision",
    "use_cpu": "precision",
    "ddp_backend": "distributed (gloo on CPU under torchrun, else the default)",
    "fsdp": "distributed",
    "fsdp_config": "distributed",
    "eval_strategy": "eval_every_steps",
    "eval_steps": "eval_every_steps",
    "per_device_eval_batch_size": "per_device_batch_size",
    "prediction_loss_only": "eval_every_steps (validation logs the loss only)",
    "label_names": "eval_every_steps (the batch's labels)",
    "metric_for_best_model": "early_stopping_patience / keep_best_checkpoint (the validation loss)",
    "greater_is_better": "early_stopping_patience / keep_best_checkpoint (the validation loss)",
    "load_best_model_at_end": "keep_best_checkpoint",
}

# Other fields a passthrough must not set: they would be ignored or would break what otdistill relies on.
REFUSED: dict[str, str] = {
    "fp16": "precision (bf16 or fp32: the distillation objective is not checked with fp16's loss scaler)",
    "gradient_checkpointing": "gradient_checkpointing (it maps to activation_checkpointing)",
    "label_smoothing_factor": "the loss is otdistill's objective (TrainConfig loss settings); the Trainer's "
    "label smoother is never called",
    "resume_from_checkpoint": "resume (checkpoints are found and fingerprint-checked by otdistill)",
}


def owned_fields() -> dict[str, str]:
    """TrainingArguments field -> the otdistill setting that owns it (why `trainer_args` may not set it)."""
    owned = {m.target: m.ours for m in MAPPED}
    owned.update({name: "fixed by otdistill" for name in FIXED})
    owned.update(DERIVED)
    owned.update(REFUSED)
    return owned


def trainer_argument_fields() -> frozenset[str]:
    """The fields `TrainingArguments(...)` takes (its dataclass init fields)."""
    return frozenset(f.name for f in dataclasses.fields(TrainingArguments) if f.init)


def check_trainer_args(trainer_args: Mapping[str, Any]) -> None:
    """Raise ValueError naming each key that is no TrainingArguments field, or one otdistill owns."""
    known = trainer_argument_fields()
    unknown = sorted(k for k in trainer_args if k not in known)
    if unknown:
        raise ValueError(
            f"TrainConfig.trainer_args: {', '.join(unknown)} is not a transformers TrainingArguments field "
            "(see https://huggingface.co/docs/transformers/main_classes/trainer#transformers.TrainingArguments)"
        )
    owned = owned_fields()
    taken = sorted(k for k in trainer_args if k in owned)
    if taken:
        why = "; ".join(f"{k}: set by {owned[k]}" for k in taken)
        raise ValueError(f"TrainConfig.trainer_args may not set fields otdistill sets itself ({why})")


def derived_arguments(
    config: TrainConfig, *, bf16: bool, on_cpu: bool, distributed_launch: bool
) -> dict[str, Any]:
    """The DERIVED fields' values for this config, precision and launch."""
    out: dict[str, Any] = {
        "bf16": bf16,
        "use_cpu": on_cpu,
        "ddp_backend": "gloo" if on_cpu and distributed_launch else None,
    }
    if config.distributed == "fsdp":
        out.update(fsdp="full_shard auto_wrap", fsdp_config={"version": 2})
    if config.validates:
        out.update(
            eval_strategy="steps",
            eval_steps=config.eval_every_steps,
            per_device_eval_batch_size=config.per_device_batch_size,
            prediction_loss_only=True,
            label_names=["labels"],  # a LoRA (peft) model's forward hides them from the Trainer's lookup
        )
    if config.early_stopping_patience or config.keep_best_checkpoint:
        out.update(metric_for_best_model="loss", greater_is_better=False)
    if config.keep_best_checkpoint:
        out["load_best_model_at_end"] = True
    return out


def training_arguments_kwargs(
    config: TrainConfig, *, bf16: bool, on_cpu: bool, distributed_launch: bool | None = None
) -> dict[str, Any]:
    """Every keyword of the TrainingArguments for `config`: the table, fixed, derived, then `trainer_args`."""
    if distributed_launch is None:
        distributed_launch = int(os.environ.get("WORLD_SIZE", "1")) > 1  # torchrun sets it
    check_trainer_args(config.trainer_args)
    kwargs = {m.target: m.value(config) for m in MAPPED}
    kwargs.update(FIXED)
    kwargs.update(derived_arguments(config, bf16=bf16, on_cpu=on_cpu, distributed_launch=distributed_launch))
    kwargs.update(config.trainer_args)
    return kwargs


def build_training_arguments(config: TrainConfig, *, bf16: bool, on_cpu: bool) -> TrainingArguments:
    """TrainingArguments for `config`; a value transformers refuses names the `trainer_args` when there are
    any (their values are checked only here, by transformers itself)."""
    kwargs = training_arguments_kwargs(config, bf16=bf16, on_cpu=on_cpu)
    try:
        return TrainingArguments(**kwargs)
    except (TypeError, ValueError) as exc:
        if not config.trainer_args:
            raise
        keys = sorted(config.trainer_args)
        raise ValueError(f"transformers refused TrainingArguments with trainer_args {keys}: {exc}") from exc
