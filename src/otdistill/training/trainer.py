"""`DistillationTrainer`: transformers' Trainer with the distillation objective plugged in as its loss.

The Trainer (through accelerate) keeps the loop, mixed precision, gradient accumulation, the scheduler,
DDP/FSDP and checkpoint contents. This subclass only:

* computes the loss (`compute_loss`): the trained model's response logits (projected at response
  positions only, via `logits_to_keep`), the teacher's side (live or cached), and the objective's terms,
  each normalised by the counts of the whole optimizer step across micro-batches and ranks;
* stops at once on a NaN/inf loss part, naming the optimizer step and the part (and on a NaN/inf
  gradient norm before the optimizer applies it);
* turns an out-of-memory error into one naming the batch size and sequence lengths;
* adds every loss part, tokens/s and memory to each training log;
* validates (when the Trainer evaluates: `eval_every_steps`) with the trained model's response
  cross-entropy alone: the teacher cache holds the training rows only, and the SFT baseline reports the
  same measure;
* writes checkpoints atomically (staged, manifest, rename) and mirrors them to S3, keeping the best
  checkpoint's final path (not its staging path) in the trainer state, and the best out of rotation.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from transformers import Trainer
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import rotate_checkpoints

from otdistill.training.checkpoints import STAGING, S3CheckpointStore, finalize_checkpoint
from otdistill.training.errors import NonFiniteGradientError, NonFiniteLossError, TrainingOOMError
from otdistill.training.inputs import batch_lengths, side_from_inputs
from otdistill.training.objective import (
    COUNT_KEYS,
    PART_LABELS,
    DistillationObjective,
    TeacherOutputs,
    combine,
    local_counts,
    response_cross_entropy,
)
from otdistill.training.precision import PrecisionChoice
from otdistill.training.teacher import TeacherSource

log = logging.getLogger(__name__)


def memory_gb(device: torch.device) -> float:
    """Peak memory since the last call: CUDA allocated memory on GPUs, the process's peak RSS on CPU."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        return peak / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


class DistillationTrainer(Trainer):
    """Trainer whose loss is `objective` (CE + distillation term) with the teacher from `teacher`."""

    def __init__(
        self,
        *args: Any,
        objective: DistillationObjective,
        teacher: TeacherSource | None = None,
        precision: PrecisionChoice | None = None,
        checkpoint_store: S3CheckpointStore | None = None,
        **kwargs: Any,
    ) -> None:
        if objective.config.needs_teacher and teacher is None:
            raise ValueError(f"loss {objective.config.loss!r} needs a teacher (live model or cache)")
        self.objective: DistillationObjective = objective
        self.teacher: TeacherSource | None = teacher
        self.precision: PrecisionChoice | None = precision
        self.checkpoint_store: S3CheckpointStore | None = checkpoint_store
        self._staging = False
        super().__init__(*args, **kwargs)
        # compute_loss normalises by the whole step's counts: the Trainer must not divide by accumulation.
        self.loss_is_scaled_for_ga = True
        self._part_sums: dict[str, float] = dict.fromkeys(objective.part_names, 0.0)
        self._tokens_since_log = 0.0
        self._parts_last_step = 0
        self._last_log_time: float | None = None
        self._micro_batch = 0

    # ---- loss ---------------------------------------------------------------------------------------
    def _get_num_items_in_batch(self, batch_samples: list[Any], device: torch.device) -> Any:
        """Counts of the whole optimizer step (all micro-batches, all ranks): tokens, aligned, sequences."""
        self._micro_batch = 0
        totals = torch.zeros(len(COUNT_KEYS), dtype=torch.float64)
        for batch in batch_samples:
            s_mask = batch["response_mask"].bool()
            t_mask = batch["teacher_response_mask"].bool() if "teacher_response_mask" in batch else None
            counts = local_counts(s_mask.cpu(), t_mask.cpu() if t_mask is not None else None)
            totals += torch.stack([counts[k] for k in COUNT_KEYS])
        totals = self._all_reduce_sum(totals)
        return {key: totals[i].to(device) for i, key in enumerate(COUNT_KEYS)}

    def _all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        if self.args.world_size > 1 and dist.is_available() and dist.is_initialized():
            backend_device = (
                torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
            )
            work = values.to(backend_device) if backend_device is not None else values.clone()
            dist.all_reduce(work, op=dist.ReduceOp.SUM)
            return work.cpu()
        return values

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        student = side_from_inputs(inputs)
        outputs = model(
            input_ids=student.input_ids,
            attention_mask=student.attention_mask,
            logits_to_keep=student.response_positions,  # (B, R) response logits only
            use_cache=False,
        )
        logits = outputs.logits
        if not model.training:  # validation (see the module doc)
            ce = response_cross_entropy(logits, student)
            return (ce, outputs) if return_outputs else ce
        teacher_out: TeacherOutputs | None = None
        if self.objective.config.needs_teacher:
            assert self.teacher is not None
            teacher_out = self.teacher(inputs, logits.device)
        terms = self.objective.terms(logits, student, teacher_out)
        local = local_counts(student.response_mask, teacher_out.mask if teacher_out is not None else None)
        step_totals = isinstance(num_items_in_batch, Mapping) and model.training
        total = num_items_in_batch if step_totals else local
        scale = float(self.args.world_size) if step_totals else 1.0
        values = torch.stack([t.value.detach().float() for t in terms]).tolist()
        self._check_finite({t.name: v for t, v in zip(terms, values, strict=True)}, inputs)
        loss = combine(terms, local, total, scale)
        if model.training:
            for term, value in zip(terms, values, strict=True):
                share = float(local[term.count]) / max(float(total[term.count]), 1.0)
                self._part_sums[term.name] += value * share
            self._tokens_since_log += float(student.attention_mask.sum())
            self._micro_batch += 1
        return (loss, outputs) if return_outputs else loss

    def _check_finite(self, values: Mapping[str, float], inputs: Mapping[str, Any]) -> None:
        if all(v == v and abs(v) != float("inf") for v in values.values()):
            return
        parts = {PART_LABELS.get(name, name): value for name, value in values.items()}
        raise NonFiniteLossError(
            step=self.state.global_step + 1,
            parts=parts,
            micro_batch=self._micro_batch,
            example_ids=list(inputs.get("example_ids", [])),
        )

    def _get_grad_norm(self, model: nn.Module, grad_norm: Any = None) -> Any:
        """The Trainer's gradient norm (all ranks), checked before the optimizer applies the update."""
        norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        value = float(norm.item() if isinstance(norm, torch.Tensor) else norm)
        if not math.isfinite(value):
            raise NonFiniteGradientError(self.state.global_step + 1, value)
        return norm

    def training_step(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None
    ) -> torch.Tensor:
        if self._last_log_time is None:
            self._last_log_time = time.perf_counter()
            self._parts_last_step = self.state.global_step
        try:
            return super().training_step(model, inputs, num_items_in_batch)
        except torch.OutOfMemoryError as exc:
            raise self.oom_error(inputs) from exc

    def oom_error(self, inputs: Mapping[str, Any]) -> TrainingOOMError:
        ids = inputs.get("input_ids")
        batch = int(ids.shape[0]) if isinstance(ids, torch.Tensor) else self.args.per_device_train_batch_size
        return TrainingOOMError(
            step=self.state.global_step + 1,
            batch_size=batch,
            lengths=batch_lengths(inputs),
            gradient_accumulation_steps=self.args.gradient_accumulation_steps,
            precision=self.precision.name if self.precision else "unknown",
            device=str(self.args.device),
        )

    # ---- logging ------------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self.state.global_step > self._parts_last_step:
            names = list(self._part_sums)
            packed = torch.tensor(
                [*(self._part_sums[n] for n in names), self._tokens_since_log], dtype=torch.float64
            )
            packed = self._all_reduce_sum(packed)
            steps = self.state.global_step - self._parts_last_step
            for i, name in enumerate(names):
                logs[f"loss_{name}"] = float(packed[i]) / steps
            now = time.perf_counter()
            elapsed = now - (self._last_log_time or now)
            if elapsed > 0:
                logs["tokens_per_second"] = float(packed[-1]) / elapsed
            logs["memory_gb"] = memory_gb(self.args.device)
            self._part_sums = dict.fromkeys(names, 0.0)
            self._tokens_since_log = 0.0
            self._parts_last_step = self.state.global_step
            self._last_log_time = now
        super().log(logs, start_time)

    # ---- checkpoints ------------------------------------------------------------------------------
    def _get_output_dir(self, trial: Any) -> str:
        base = super()._get_output_dir(trial)
        return os.path.join(base, STAGING) if self._staging else base

    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        """The Trainer's checkpoint, written into a staging dir, then finalized atomically (and uploaded)."""
        started = time.perf_counter()
        run_dir = Path(super()._get_output_dir(trial))
        name = f"checkpoint-{self.state.global_step}"
        self._staging = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging = False
        self.accelerator.wait_for_everyone()  # every rank has written its RNG state into the staging dir
        self._point_at_final_best(run_dir, run_dir / STAGING / name)
        if self.args.should_save:
            final = finalize_checkpoint(
                run_dir / STAGING / name,
                run_dir / name,
                self.state.global_step,
                self.objective.config.checkpoint_fingerprint,  # resume takes only matching checkpoints
            )
            rotate_checkpoints(
                output_dir=str(run_dir),
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
            )
            if self.checkpoint_store is not None:
                uri = self.checkpoint_store.upload(final)
                log.info("checkpoint %s uploaded to %s", name, uri)
        self.accelerator.wait_for_everyone()
        if self._last_log_time is not None:  # tokens/s measures training, not checkpoint writing
            self._last_log_time += time.perf_counter() - started

    def _point_at_final_best(self, run_dir: Path, staged: Path) -> None:
        """The Trainer looks for the best checkpoint where it wrote this one (the staging directory): point
        the state at its final directory instead, also in the staged trainer state a resume reads."""
        best_step = self.state.best_global_step
        if not best_step:
            return
        best = run_dir / f"checkpoint-{best_step}"
        if best_step != self.state.global_step and not best.is_dir():
            return
        self.state.best_model_checkpoint = str(best)
        if self.args.should_save:
            self.state.save_to_json(str(staged / TRAINER_STATE_NAME))
