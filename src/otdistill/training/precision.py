"""Choosing the training precision: bf16 mixed precision on GPUs that support it, fp32 everywhere else.

The choice is made once, recorded with the run (it changes numbers), and asked-for bf16 on hardware without
it fails here with a clear message instead of deep inside accelerate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

SAVE_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class PrecisionChoice:
    """`name`: "bf16" (mixed precision for the trained model) or "fp32"; `teacher_dtype`: the teacher's."""

    name: str  # "bf16" | "fp32"
    device: str  # "cuda" | "cpu" | ...
    reason: str

    @property
    def bf16(self) -> bool:
        return self.name == "bf16"

    @property
    def teacher_dtype(self) -> torch.dtype:
        """A frozen teacher has no master weights to keep: it runs in bf16 outright under bf16."""
        return torch.bfloat16 if self.bf16 else torch.float32

    def trained_dtype(self, *, lora: bool, distributed: str = "ddp") -> torch.dtype:
        """The dtype the trained model's base weights are loaded in (a 7B base is never loaded in fp32).

        Under bf16, bf16 when the base gets no fp32 master weights of its own to need: with LoRA it is
        frozen (peft keeps the adapters, the only trained weights, in fp32), and under FSDP accelerate
        upcasts the trained parameters to fp32 master weights itself. Full fine-tuning without FSDP keeps
        fp32 weights and runs bf16 autocast: AdamW updates of ~1e-5 relative size vanish in bf16 weights.
        fp32 whenever the precision is fp32.
        """
        if self.bf16 and (lora or distributed == "fsdp"):
            return torch.bfloat16
        return torch.float32

    def save_dtype(self, requested: str = "auto") -> torch.dtype:
        """The dtype the final model is saved (and served) in: `requested` ("bf16", "fp16", "fp32"), or for
        "auto" bf16 when this stage ran under bf16 and fp32 otherwise (a CPU run saves what it trained)."""
        if requested == "auto":
            return torch.bfloat16 if self.bf16 else torch.float32
        if requested not in SAVE_DTYPES:
            raise ValueError(
                f"save_dtype must be 'auto' or one of {', '.join(SAVE_DTYPES)}; got {requested!r}"
            )
        return SAVE_DTYPES[requested]

    def record(self) -> dict[str, str]:
        return {f"precision.{k}": str(v) for k, v in asdict(self).items()}


def bf16_supported() -> bool:
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def choose_precision(requested: str = "auto", use_cpu: bool = False) -> PrecisionChoice:
    """bf16 when asked or, for "auto", when a CUDA GPU supports it; fp32 on CPU and older GPUs."""
    device = "cuda" if torch.cuda.is_available() and not use_cpu else "cpu"
    if requested == "fp32":
        return PrecisionChoice("fp32", device, "requested")
    supported = device == "cuda" and bf16_supported()
    if requested == "bf16":
        if not supported:
            raise ValueError(
                f"precision 'bf16' was requested but the {device} device does not support bf16 "
                "(needs a CUDA GPU with compute capability >= 8.0); use 'auto' or 'fp32'"
            )
        return PrecisionChoice("bf16", device, "requested")
    if requested != "auto":
        raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {requested!r}")
    if supported:
        return PrecisionChoice("bf16", device, "auto: CUDA GPU with bf16 support")
    reason = "auto: no CUDA device" if device == "cpu" else "auto: GPU without bf16 support"
    return PrecisionChoice("fp32", device, reason)
