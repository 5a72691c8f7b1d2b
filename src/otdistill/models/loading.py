"""Load a resolved model and its tokenizer: safetensors only, remote code only when the spec allows it."""

from __future__ import annotations

from typing import Any

import torch
import transformers

from otdistill.models.spec import ResolvedModel


def _dtype(dtype: str | torch.dtype) -> Any:
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use e.g. 'float32', 'bfloat16', 'float16' or 'auto'")
    return value


def load_model(
    resolved: ResolvedModel, dtype: str | torch.dtype = "float32", device: str | torch.device | None = None
) -> transformers.PreTrainedModel:
    """The causal LM in `resolved.path`, from safetensors, on `device` (unchanged when None)."""
    model = transformers.AutoModelForCausalLM.from_pretrained(
        resolved.path,
        dtype=_dtype(dtype),
        use_safetensors=True,
        trust_remote_code=resolved.trust_remote_code,
        local_files_only=True,
    )
    if device is not None:
        torch.nn.Module.to(model, device)
    return model


def load_tokenizer(resolved: ResolvedModel) -> transformers.PreTrainedTokenizerBase:
    """The tokenizer saved next to the model (chat template and special tokens included)."""
    tok = transformers.AutoTokenizer.from_pretrained(
        resolved.path, trust_remote_code=resolved.trust_remote_code, local_files_only=True
    )
    return tok
