"""Writing a saved model's weights in the dtype it is served in.

Training may keep fp32 master weights (full fine-tuning under bf16 autocast, FSDP's upcast shards, every
CPU run), but every step after training (the teacher cache, distillation, evaluation, serving) loads the
model in bf16 on a GPU: an fp32 artifact doubles the bytes each of them downloads for nothing. The cast is
done on the saved safetensors files, after either save path (the plain `save_pretrained` and FSDP's
gathered `save_model`), so both get the one rule.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

CONFIG_DTYPE_KEYS = ("torch_dtype", "dtype")  # transformers 4.x wrote the first, 5.x the second


def dtype_name(dtype: torch.dtype) -> str:
    """The name Hugging Face configs and the Model artifact record ("bfloat16", "float16", "float32")."""
    return str(dtype).removeprefix("torch.")


def cast_saved_weights(model_dir: Path, dtype: torch.dtype) -> bool:
    """Rewrite every `*.safetensors` file in `model_dir` with its floating tensors in `dtype`, and the
    config's dtype (and a sharded save's total size) to match. Files already in `dtype` are left untouched
    (byte for byte: an fp32 CPU run keeps its exact files). Returns whether anything was rewritten."""
    changed, total = False, 0
    for path in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
        cast = {n: t.to(dtype) if t.is_floating_point() else t for n, t in tensors.items()}
        total += sum(t.nbytes for t in cast.values())
        if any(cast[n].dtype != t.dtype for n, t in tensors.items()):
            save_file(cast, str(path), metadata={**metadata, "format": metadata.get("format", "pt")})
            changed = True
    if changed:
        _rewrite_json(model_dir / "model.safetensors.index.json", lambda d: _set_total(d, total))
        _rewrite_json(model_dir / "config.json", lambda d: _set_dtype(d, dtype_name(dtype)))
    return changed


def _set_total(index: dict[str, Any], total: int) -> None:
    index.setdefault("metadata", {})["total_size"] = total


def _set_dtype(config: dict[str, Any], name: str) -> None:
    for key in CONFIG_DTYPE_KEYS:
        if key in config:
            config[key] = name


def _rewrite_json(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        edit(data)
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
