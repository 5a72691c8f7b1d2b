"""Convert a GGUF model, once, into a Hugging Face safetensors directory in the cache.

Loading a GGUF file with transformers de-quantises every tensor (1-2 minutes for Gemma-3-270M on a CPU);
loading the converted safetensors directory takes seconds. The conversion writes the model weights, the
tokenizer (with its chat template and special tokens) and the generation config, keyed by the sha256 of the
GGUF content, via `publish_once` (file lock + atomic rename). Weights are saved in float32: de-quantised
GGUF values (scale * quant + offset, with float16 scales) are exact in float32 but not in bfloat16, so the
converted model computes what the GGUF model computes; `load_model(..., dtype=...)` casts on load.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import transformers

from otdistill.models.cache import publish_once, read_marker
from otdistill.models.spec import ModelSourceError

logger = logging.getLogger(__name__)


def converted_dir(cache_root: Path, gguf_sha256: str) -> Path:
    """Where the conversion of the GGUF with this content hash lives."""
    return cache_root / "models" / f"gguf-{gguf_sha256[:32]}"


def _assemble(parts: tuple[Path, ...], dest: Path, expected_sha256: str) -> None:
    """Write the parts, concatenated in order, to `dest`, verifying the sha256 of the whole."""
    import hashlib

    digest = hashlib.sha256()
    with open(dest, "wb") as out:
        for part in parts:
            with open(part, "rb") as fh:
                while block := fh.read(8 * 1024 * 1024):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != expected_sha256:
        raise ModelSourceError(
            f"assembled {dest.name} from {len(parts)} parts has sha256 {digest.hexdigest()}, "
            f"expected {expected_sha256}; a part is corrupt or from another release"
        )


def _convert_into(gguf_dir: Path, file_name: str, out_dir: Path) -> None:
    """De-quantise the GGUF in `gguf_dir` and save model, tokenizer and generation config to `out_dir`."""
    import torch

    tok = transformers.AutoTokenizer.from_pretrained(gguf_dir, gguf_file=file_name)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file=file_name, dtype=torch.float32
    )
    # The de-quantised weights are plain tensors now; without these the model would save as "GGUF quantized".
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(out_dir)


def convert_gguf(
    parts: tuple[Path, ...], file_name: str, gguf_sha256: str, cache_root: Path, source: str
) -> Path:
    """The cached safetensors conversion of a GGUF model given as one file or ordered parts.

    A cache hit returns immediately; otherwise the model is converted under a lock and published
    atomically, so concurrent callers convert it once.
    """
    target = converted_dir(cache_root, gguf_sha256)
    if read_marker(target) is not None:
        return target

    def build(tmp: Path) -> None:
        logger.info("converting GGUF %s (%s) to safetensors in %s", source, gguf_sha256[:12], target)
        work = tmp / ".gguf"
        work.mkdir()
        if len(parts) == 1:
            os.symlink(parts[0].resolve(), work / file_name)
        else:
            _assemble(parts, work / file_name, gguf_sha256)
        _convert_into(work, file_name, tmp)
        shutil.rmtree(work)

    provenance = {
        "source": source,
        "gguf_file": file_name,
        "gguf_sha256": gguf_sha256,
        "transformers": transformers.__version__,
    }
    return publish_once(target, build, provenance)
