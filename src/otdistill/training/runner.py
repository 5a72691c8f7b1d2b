"""The two training stages as functions a KFP component (or a user) calls: teacher SFT, student distillation.

Both build the same `DistillationTrainer`; only the objective and the data differ:

* `train_teacher_sft`: the teacher's response cross-entropy on its own tokenisation (full fine-tuning, or
  LoRA merged at the end);
* `distill_student`: the student's response cross-entropy plus the chosen distillation term, the teacher
  live (frozen) or from its top-k cache.

With `eval_every_steps` set, both log the trained model's response cross-entropy on the validation rows
they are given (`val/loss`), and may stop early or end on the best checkpoint (`TrainConfig`).

Each resumes from the newest complete checkpoint in `output_dir` (or S3) when `resume` is on, and ends by
saving a plain Hugging Face model directory (weights + tokenizer) atomically to `<output_dir>/model`,
with `training_result.json` next to it: what ran, on what precision, with which seeds, and its history.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainingArguments
from transformers.trainer_callback import EarlyStoppingCallback, PrinterCallback, ProgressCallback

from otdistill.data import DataConfig, Example, load_examples, tokenize_pair_split
from otdistill.data.loading import LoadedSplit
from otdistill.data.tokenization import PairedFeature, PairEncoder, SideFeature
from otdistill.losses.registry import get_loss, loss_names
from otdistill.models import ModelSpec, ResolvedModel, load_model, load_tokenizer, resolve_model
from otdistill.training.arguments import build_training_arguments
from otdistill.training.callbacks import ProgressAndMetricsCallback, numeric, validation_metrics
from otdistill.training.checkpoints import (
    STAGING,
    S3CheckpointStore,
    checkpoint_step,
    remove_if_empty,
    resolve_resume,
)
from otdistill.training.config import TrainConfig
from otdistill.training.determinism import determinism_record, seed_everything
from otdistill.training.inputs import TrainCollator, encode_side_examples
from otdistill.training.lora import apply_lora, merge_lora
from otdistill.training.objective import DistillationObjective
from otdistill.training.precision import PrecisionChoice, choose_precision
from otdistill.training.save_dtype import cast_saved_weights, dtype_name
from otdistill.training.teacher import CachedTeacher, LiveTeacher, TeacherSource, shard_teacher
from otdistill.training.trainer import DistillationTrainer

log = logging.getLogger(__name__)

ModelRef = ModelSpec | ResolvedModel | str | os.PathLike[str]
DataRef = DataConfig | LoadedSplit | Sequence[Example]
RESULT_FILE = "training_result.json"
MODEL_DIR = "model"


@dataclass
class TrainResult:
    """What a stage produced: a plain HF model directory, its final step and loss, and the run's record."""

    stage: str
    model_dir: Path
    output_dir: Path
    global_step: int
    train_loss: float
    history: list[dict[str, float]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    resumed_from: str | None = None
    record: dict[str, Any] = field(default_factory=dict)
    # validation during training (empty / None when off): `val/...` values per evaluation, the best one
    validation_history: list[dict[str, float]] = field(default_factory=list)
    best_val_loss: float | None = None
    best_step: int | None = None
    stopped_early: bool = False
    # each objective term's weight (`DistillationObjective.weights`): with `history`, the terms' shares
    weights: dict[str, float] = field(default_factory=dict)

    def objective_shares(self) -> dict[str, float]:
        """Each term's mean share of the objective over the logged steps (`otdistill.training.shares`)."""
        from otdistill.training.shares import objective_shares

        return objective_shares(self.history, self.weights)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["model_dir"] = str(self.model_dir)
        out["output_dir"] = str(self.output_dir)
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrainResult:
        """Read `training_result.json` (the file or the model directory holding it)."""
        p = Path(path)
        data = json.loads((p / RESULT_FILE if p.is_dir() else p).read_text(encoding="utf-8"))
        data["model_dir"], data["output_dir"] = Path(data["model_dir"]), Path(data["output_dir"])
        return cls(**data)


# ---- inputs -------------------------------------------------------------------------------------------
def resolve(ref: ModelRef) -> ResolvedModel:
    if isinstance(ref, ResolvedModel):
        return ref
    if isinstance(ref, ModelSpec):
        return resolve_model(ref)
    return resolve_model(ModelSpec(source=str(ref)))


def _examples(data: DataRef) -> tuple[list[Example], DataConfig | None]:
    if isinstance(data, DataConfig):
        return load_examples(data).examples, data
    if isinstance(data, LoadedSplit):
        return list(data.examples), None
    return list(data), None


def paired_features(
    data: DataRef, teacher_tok: Any, student_tok: Any, max_length: int, max_prompt_tokens: int | None
) -> tuple[list[PairedFeature], str]:
    """Both models' tokens for every example, cut the same way (`otdistill.data`'s rules and report).

    Also returns the tokenised split's `DataReport.content_sha256` (what a teacher cache records of its
    data), or "" for a bare list of examples, whose task, and so whose hash, is not known here.
    """
    if isinstance(data, DataConfig | LoadedSplit):
        cfg = (
            data
            if isinstance(data, DataConfig)
            else DataConfig(max_length=max_length, max_prompt_tokens=max_prompt_tokens)
        )
        loaded = load_examples(data) if isinstance(data, DataConfig) else data
        split = tokenize_pair_split(loaded, teacher_tok, student_tok, cfg)
        return split.features, split.report.content_sha256
    encoder = PairEncoder(
        teacher_tok, student_tok, max_length=max_length, max_prompt_tokens=max_prompt_tokens
    )
    return [encoder.encode(example, index) for index, example in enumerate(data)], ""


def same_tokenizer(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    """Whether two tokenizers map text to the same ids (same vocabulary, same token -> id map)."""
    return bool(a.get_vocab() == b.get_vocab())


def check_loss_for_tokenizers(
    config: TrainConfig, teacher_tok: PreTrainedTokenizerBase, student_tok: PreTrainedTokenizerBase
) -> None:
    """Refuse a same-tokenizer loss (forward KL) across different tokenizers (its positions and
    vocabularies would not align); the loss registry says which losses distil across tokenizers."""
    spec = get_loss(config.loss, field="TrainConfig.loss")
    if spec.needs_teacher and not spec.cross_tokenizer and not same_tokenizer(teacher_tok, student_tok):
        across = [n for n in loss_names() if get_loss(n).needs_teacher and get_loss(n).cross_tokenizer]
        raise ValueError(
            f"loss {config.loss!r} needs the teacher and the student to share one tokenizer, but they differ "
            f"(teacher {type(teacher_tok).__name__} with {len(teacher_tok)} tokens, student "
            f"{type(student_tok).__name__} with {len(student_tok)} tokens); use one of "
            f"{', '.join(repr(n) for n in across)}, which distil across tokenizers"
        )


# ---- trainer assembly ---------------------------------------------------------------------------------
def training_arguments(config: TrainConfig, precision: PrecisionChoice) -> TrainingArguments:
    """The Trainer's arguments for `config` (`otdistill.training.arguments`: one declared table, the fixed
    settings, those derived from the precision and the launch, and the config's `trainer_args`)."""
    return build_training_arguments(config, bf16=precision.bf16, on_cpu=precision.device == "cpu")


@dataclass
class StageParts:
    """One stage's Trainer inputs: what is trained (LoRA applied by `_run`), on which data, how."""

    stage: str
    config: TrainConfig
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    train_dataset: Sequence[PairedFeature] | Sequence[SideFeature]
    collator: TrainCollator
    teacher: TeacherSource | None
    precision: PrecisionChoice
    args: TrainingArguments
    eval_dataset: Sequence[SideFeature] | None = None  # the validation rows, when the stage validates


def _build_trainer(parts: StageParts) -> DistillationTrainer:
    config, stage, eval_dataset = parts.config, parts.stage, parts.eval_dataset
    store = (
        S3CheckpointStore(config.checkpoint_uri, config.s3_endpoint_url) if config.checkpoint_uri else None
    )
    callbacks: list[Any] = [ProgressAndMetricsCallback(description=stage, progress_bar=config.progress_bar)]
    if config.early_stopping_patience:
        callbacks.append(
            EarlyStoppingCallback(config.early_stopping_patience, config.early_stopping_min_delta)
        )
    trainer = DistillationTrainer(
        model=parts.model,
        args=parts.args,
        data_collator=parts.collator,
        train_dataset=list(parts.train_dataset),
        eval_dataset=list(eval_dataset) if eval_dataset is not None and config.validates else None,
        processing_class=parts.tokenizer,
        callbacks=callbacks,
        objective=DistillationObjective(config),
        teacher=parts.teacher,
        precision=parts.precision,
        checkpoint_store=store,
    )
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    return trainer


def _run(parts: StageParts, record: dict[str, Any]) -> TrainResult:
    stage, config, precision, args = parts.stage, parts.config, parts.precision, parts.args
    output_dir = Path(config.output_dir)
    if config.lora:
        parts = dataclasses.replace(parts, model=apply_lora(parts.model, config))  # type: ignore[arg-type]
    trainer = _build_trainer(parts)
    if config.distributed == "fsdp" and args.world_size > 1 and not trainer.is_fsdp_enabled:
        raise RuntimeError(
            f"distributed 'fsdp' was requested but accelerate did not enable FSDP on {precision.device} "
            "(it shards the trained model on GPUs only); use distributed 'ddp' here, with "
            "teacher_sharding 'fsdp' to shard a large teacher"
        )
    resume_from: Path | None = None
    if config.resume:
        with args.main_process_first(local=True, desc="finding the checkpoint to resume from"):
            store = trainer.checkpoint_store if args.should_save else None
            resume_from = resolve_resume(output_dir, store, config.checkpoint_fingerprint)
        if resume_from is not None:
            log.info("%s: resuming from %s (step %s)", stage, resume_from, checkpoint_step(resume_from))
    output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)

    model_dir = output_dir / MODEL_DIR
    save_dtype = precision.save_dtype(config.save_dtype)
    record = {
        **record,
        **precision.record(),
        "precision.save_dtype": dtype_name(save_dtype),
        "determinism": determinism_record(config.seed, config.deterministic),
        "world_size": args.world_size,
        "distributed": "fsdp" if trainer.is_fsdp_enabled else ("ddp" if args.world_size > 1 else "none"),
    }
    result = TrainResult(
        stage=stage,
        model_dir=model_dir,
        output_dir=output_dir,
        global_step=int(output.global_step),
        train_loss=float(output.training_loss),
        history=training_history(trainer.state.log_history),
        metrics={k: float(v) for k, v in output.metrics.items() if isinstance(v, int | float)},
        resumed_from=str(resume_from) if resume_from else None,
        record=record,
        validation_history=validation_history(trainer.state.log_history),
        best_val_loss=float(trainer.state.best_metric) if trainer.state.best_metric is not None else None,
        best_step=trainer.state.best_global_step or None,
        stopped_early=bool(config.early_stopping_patience) and output.global_step < trainer.state.max_steps,
        weights=trainer.objective.weights(),
    )
    save_final_model(trainer, parts.tokenizer, model_dir, result, save_dtype)
    if args.should_save:
        log_record_to_mlflow(stage, result.record)
    trainer.accelerator.wait_for_everyone()
    return result


def log_record_to_mlflow(stage: str, record: dict[str, Any]) -> None:
    """Precision, seeds and deterministic settings as params of the active MLflow run (when there is one).

    They go through the run's metric buffer, which is then flushed (bounded): the training metrics and these
    params are in MLflow when this returns, unless the server is down; then they stay buffered, and the
    step run's close waits for them again (`otdistill.tracking.metric_buffer`).
    """
    import mlflow

    from otdistill.tracking.metric_buffer import run_buffer

    active = mlflow.active_run()
    if active is None:
        return
    from otdistill.config import flatten

    keep = {
        k: v for k, v in record.items() if k.startswith("precision.") or k in ("determinism", "distributed")
    }
    keep["world_size"] = record.get("world_size")
    buffer = run_buffer(active.info.run_id)
    buffer.log_params({f"{stage}.{k}": str(v) for k, v in flatten(keep).items()})
    if buffer.flush():
        log.warning("%s: MLflow has not taken %s yet; still retrying", stage, buffer.describe_unsent())


def training_history(log_history: list[dict[str, Any]]) -> list[dict[str, float]]:
    """The per-step training logs of the whole run, resumed parts included (the Trainer keeps them in
    every checkpoint's trainer state), as plain floats."""
    return [numeric(entry) for entry in log_history if "loss" in entry]


def validation_history(log_history: list[dict[str, Any]]) -> list[dict[str, float]]:
    """The validation logs of the whole run (resumed parts included) as `{"step": n, "val/loss": x, ...}`."""
    return [
        {"step": float(entry["step"]), **validation_metrics(entry)}
        for entry in log_history
        if "eval_loss" in entry
    ]


def save_final_model(
    trainer: DistillationTrainer,
    tokenizer: PreTrainedTokenizerBase,
    model_dir: Path,
    result: TrainResult,
    dtype: torch.dtype,
) -> None:
    """Save the trained model (LoRA merged) + tokenizer + result, staged and renamed into `model_dir`, its
    weights in `dtype` (the config's `save_dtype`: `cast_saved_weights`).

    Called on every rank: under FSDP the full weights are gathered collectively (the Trainer's
    `save_model`); the main process writes the files and renames.
    """
    staging = model_dir.parent / STAGING / model_dir.name
    if trainer.args.should_save:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    if trainer.is_fsdp_enabled:
        trainer.save_model(str(staging))
    elif trainer.args.should_save:
        model = merge_lora(trainer.accelerator.unwrap_model(trainer.model))
        model.save_pretrained(staging, safe_serialization=True)  # type: ignore[operator]
    if not trainer.args.should_save:
        return
    cast_saved_weights(staging, dtype)
    tokenizer.save_pretrained(staging)
    (staging / RESULT_FILE).write_text(json.dumps(result.to_dict(), indent=1, default=str), encoding="utf-8")
    if model_dir.exists():
        shutil.rmtree(model_dir)
    os.rename(staging, model_dir)
    remove_if_empty(staging.parent)


def _setup(config: TrainConfig) -> tuple[PrecisionChoice, TrainingArguments]:
    precision = choose_precision(config.precision)
    args = training_arguments(config, precision)  # initialises torch.distributed under torchrun
    seed_everything(config.seed, config.deterministic)
    return precision, args


# ---- public stages ------------------------------------------------------------------------------------
def validation_features(
    config: TrainConfig,
    validation: DataRef | None,
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int,
    max_prompt_tokens: int | None,
    name: str,
) -> list[SideFeature] | None:
    """The trained model's features of the validation rows, cut as its training rows are (None when the
    stage does not validate). The student's own tokenisation for distillation too: the validation loss is
    its response cross-entropy, the measure the SFT baseline reports, and needs no teacher."""
    if not config.validates:
        return None
    if validation is None:
        raise ValueError(
            f"eval_every_steps is {config.eval_every_steps} but no validation data was given "
            "(pass `validation=`; in the pipeline the step receives the validation snapshot)"
        )
    examples, _ = _examples(validation)
    if not examples:
        raise ValueError("eval_every_steps is set but the validation data has no rows")
    return encode_side_examples(
        examples, tokenizer, max_length=max_length, max_prompt_tokens=max_prompt_tokens, name=name
    )


def train_teacher_sft(
    config: TrainConfig,
    teacher: ModelRef,
    data: DataRef,
    *,
    validation: DataRef | None = None,
    max_length: int | None = None,
    max_prompt_tokens: int | None = None,
) -> TrainResult:
    """Supervised fine-tuning of the teacher on the task's responses; returns where the plain model is.

    `data`: a DataConfig (loaded and validated by `otdistill.data`), a LoadedSplit, or Examples;
    `validation` the same, read when `eval_every_steps` is set. `max_length` defaults to the DataConfig's
    (or 1024).
    """
    sft = dataclasses.replace(config, loss="none")
    precision, args = _setup(sft)
    resolved = resolve(teacher)
    tokenizer = load_tokenizer(resolved)
    examples, data_cfg = _examples(data)
    length = max_length or (data_cfg.max_length if data_cfg else 1024)
    prompt_cap = max_prompt_tokens or (data_cfg.max_prompt_tokens if data_cfg else None)
    features = encode_side_examples(examples, tokenizer, max_length=length, max_prompt_tokens=prompt_cap)
    eval_features = validation_features(
        sft, validation, tokenizer, max_length=length, max_prompt_tokens=prompt_cap, name="teacher"
    )
    model = load_model(resolved, dtype=precision.trained_dtype(lora=sft.lora, distributed=sft.distributed))
    record = {"stage": "teacher_sft", "model": resolved.record(), "train_examples": len(features)}
    if eval_features is not None:
        record["validation_examples"] = len(eval_features)
    collator = TrainCollator.for_model(tokenizer)
    parts = StageParts(
        "teacher_sft", sft, model, tokenizer, features, collator, None, precision, args, eval_features
    )
    return _run(parts, record)


def distill_student(
    config: TrainConfig,
    student: ModelRef,
    teacher: ModelRef | None,
    data: DataRef,
    *,
    validation: DataRef | None = None,
    max_length: int | None = None,
    max_prompt_tokens: int | None = None,
) -> TrainResult:
    """Train the student with CE + the configured distillation term; returns where the plain model is.

    `teacher` is needed for every loss but "none" (its tokenizer always, its weights only when
    `teacher_source` is "live"). With "none" the student is fine-tuned alone: the SFT baseline.
    `validation`: rows whose response cross-entropy is logged every `eval_every_steps` (the student's own
    tokenisation; no teacher is needed, so a teacher cache of the training rows suffices).
    """
    precision, args = _setup(config)
    s_resolved = resolve(student)
    s_tok = load_tokenizer(s_resolved)
    data_cfg = data if isinstance(data, DataConfig) else None
    length = max_length or (data_cfg.max_length if data_cfg else 1024)
    prompt_cap = max_prompt_tokens or (data_cfg.max_prompt_tokens if data_cfg else None)
    record: dict[str, Any] = {"stage": "distill", "student": s_resolved.record(), "loss": config.loss}
    teacher_source: TeacherSource | None = None
    dataset: list[PairedFeature] | list[SideFeature]
    if not config.needs_teacher:
        examples, _ = _examples(data)
        dataset = encode_side_examples(
            examples, s_tok, max_length=length, max_prompt_tokens=prompt_cap, name="student"
        )
        collator = TrainCollator.for_model(s_tok)
    else:
        if teacher is None:
            raise ValueError(
                f"loss {config.loss!r} needs a teacher model (for its tokenizer, and weights if live)"
            )
        t_resolved = resolve(teacher)
        t_tok = load_tokenizer(t_resolved)
        check_loss_for_tokenizers(config, t_tok, s_tok)
        dataset, data_sha256 = paired_features(data, t_tok, s_tok, length, prompt_cap)
        collator = TrainCollator.for_pair(t_tok, s_tok)
        record["teacher"] = t_resolved.record()
        record["teacher_source"] = config.teacher_source
        if config.teacher_source == "live":
            t_model = load_model(t_resolved, dtype=precision.teacher_dtype, device=args.device)
            sharded = config.teacher_sharding == "fsdp" and args.world_size > 1
            if config.teacher_sharding == "fsdp" and not sharded:
                log.info("teacher_sharding 'fsdp' on a single process: the teacher stays whole")
            teacher_source = LiveTeacher(shard_teacher(t_model) if sharded else t_model)
            record["teacher_sharding"] = "fsdp" if sharded else "replicate"
        else:
            from otdistill.teacher_cache import CacheIdentity, TeacherCache

            assert config.teacher_cache_uri is not None  # TrainConfig.validate
            cache = TeacherCache(config.teacher_cache_uri, endpoint_url=config.s3_endpoint_url)
            objective = DistillationObjective(config)
            cache.check_compatible(objective.loss, t_resolved.revision)
            # Before any step: a cache of other data, tokenizers, k or temperatures is refused by name.
            cache.check_matches(
                k=config.top_k,
                temperatures=(config.temperature, config.sinkhorn_temperature),
                identity=CacheIdentity.of(data_sha256, t_tok, s_tok),
            )
            teacher_source = CachedTeacher(cache)
            record["teacher_cache"] = {"uri": cache.uri, "k": cache.k, "top_uld": cache.top_uld}
    record["train_examples"] = len(dataset)
    eval_features = validation_features(
        config, validation, s_tok, max_length=length, max_prompt_tokens=prompt_cap, name="student"
    )
    if eval_features is not None:
        record["validation_examples"] = len(eval_features)
    model = load_model(
        s_resolved, dtype=precision.trained_dtype(lora=config.lora, distributed=config.distributed)
    )
    parts = StageParts(
        "distill", config, model, s_tok, dataset, collator, teacher_source, precision, args, eval_features
    )
    return _run(parts, record)


def set_torch_threads(default: int = 2) -> None:
    """Honour OMP_NUM_THREADS (the CPU quota of a pod), else `default`."""
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", default)))
