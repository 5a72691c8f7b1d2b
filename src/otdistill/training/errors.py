"""Loud, specific training failures: which step and loss part broke, which batch shape ran out of memory.

A NaN that is averaged into a logged mean, or an OOM that only says "CUDA out of memory", costs a user hours
of bisecting; these errors carry what is needed to act (lower the learning rate, shorten `max_length`,
halve `per_device_batch_size`) in their message and as attributes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


class TrainingError(RuntimeError):
    """Base class of the training core's own failures."""


class NonFiniteLossError(TrainingError):
    """A loss part became NaN or infinite: the run stops at once, naming the optimizer step and part(s)."""

    def __init__(
        self, step: int, parts: Mapping[str, float], micro_batch: int = 0, example_ids: Sequence[str] = ()
    ):
        self.step = step
        self.parts = dict(parts)
        self.bad_parts = [name for name, value in parts.items() if not math.isfinite(value)]
        self.micro_batch = micro_batch
        self.example_ids = list(example_ids)
        shown = ", ".join(f"{name}={value:.6g}" for name, value in parts.items())
        ids = ", ".join(self.example_ids[:8]) + (" ..." if len(self.example_ids) > 8 else "")
        super().__init__(
            f"non-finite loss at optimizer step {step} (micro-batch {micro_batch}): "
            f"{' and '.join(self.bad_parts)} broke ({shown}); examples: [{ids}]. "
            "Lower the learning rate, check the teacher's outputs (or cache) for these examples, "
            "or run with deterministic=true to reproduce it."
        )


class NonFiniteGradientError(TrainingError):
    """The loss was finite but its gradient is not (e.g. a NaN in a backward pass): stop before the update."""

    def __init__(self, step: int, grad_norm: float):
        self.step = step
        self.grad_norm = grad_norm
        super().__init__(
            f"non-finite gradient norm ({grad_norm}) at optimizer step {step} although every loss part was "
            "finite; the update was not applied. A backward pass produced NaN/inf: check for overflow "
            "(precision, learning rate) or try detach_sinkhorn_plan=true."
        )


class TrainingOOMError(TrainingError):
    """Out of memory in a training step, with the batch size and sequence lengths that caused it."""

    def __init__(
        self,
        step: int,
        batch_size: int,
        lengths: Mapping[str, int],
        gradient_accumulation_steps: int,
        precision: str,
        device: str,
    ):
        self.step = step
        self.batch_size = batch_size
        self.lengths = dict(lengths)
        shown = ", ".join(f"{name}={value}" for name, value in lengths.items())
        super().__init__(
            f"out of memory on {device} at optimizer step {step} with per-device batch size {batch_size} "
            f"and sequence lengths {shown} (precision {precision}, gradient accumulation "
            f"{gradient_accumulation_steps}). Halve per_device_batch_size and double "
            "gradient_accumulation_steps (same global batch), lower data.max_length, turn on "
            "gradient_checkpointing, or use teacher_source 'cache' to drop the live teacher."
        )
