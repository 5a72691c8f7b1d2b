"""The trained model is saved in the dtype it is served in (`TrainConfig.save_dtype`): bf16 by default
after a bf16 run, fp32 after an fp32 (CPU) run, which keeps CPU runs bit-identical; the dtype is recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from otdistill.data import Example
from otdistill.training import TrainConfig, train_teacher_sft
from otdistill.training.precision import PrecisionChoice
from otdistill.training.save_dtype import cast_saved_weights
from tests.training.conftest import MAX_LENGTH, tiny_config

BF16 = PrecisionChoice("bf16", "cuda", "test")
FP32 = PrecisionChoice("fp32", "cpu", "auto: no CUDA device")


@pytest.mark.parametrize(
    ("precision", "requested", "dtype"),
    [
        (BF16, "auto", torch.bfloat16),
        (FP32, "auto", torch.float32),  # a CPU run saves the fp32 weights it trained
        (FP32, "bf16", torch.bfloat16),
        (BF16, "fp16", torch.float16),
        (BF16, "fp32", torch.float32),
    ],
)
def test_the_save_dtype(precision: PrecisionChoice, requested: str, dtype: torch.dtype) -> None:
    assert precision.save_dtype(requested) == dtype


def test_an_unknown_save_dtype_is_refused() -> None:
    with pytest.raises(ValueError, match="TrainConfig.save_dtype must be one of auto, bf16, fp16, fp32"):
        TrainConfig(save_dtype="int8")  # type: ignore[arg-type]


def test_a_lora_teacher_saved_in_bf16_loads_in_bf16(
    tiny_pair: tuple[Path, Path], examples: list[Example], tmp_path: Path
) -> None:
    """An fp32 CPU run asked for bf16: the merged weights are on disk in bf16, the config says so, the
    record names it, and the model loads with bf16 parameters equal to the fp32 weights rounded."""
    teacher = tiny_pair[0]
    cfg = tiny_config(
        tmp_path, lora=True, lora_r=4, lora_alpha=8, lora_dropout=0.0, max_steps=2, save_dtype="bf16"
    )
    result = train_teacher_sft(cfg, teacher, examples[:4], max_length=MAX_LENGTH)

    assert result.record["precision.name"] == "fp32"
    assert result.record["precision.save_dtype"] == "bfloat16"
    saved = load_file(str(result.model_dir / "model.safetensors"))
    assert {t.dtype for t in saved.values()} == {torch.bfloat16}
    config = json.loads((result.model_dir / "config.json").read_text(encoding="utf-8"))
    assert config.get("dtype", config.get("torch_dtype")) == "bfloat16"
    loaded = AutoModelForCausalLM.from_pretrained(result.model_dir)
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    name, weight = next(iter(saved.items()))
    assert torch.equal(loaded.state_dict()[name], weight)
    assert not cast_saved_weights(result.model_dir, torch.bfloat16)  # already bf16: left as it is


def test_the_default_on_cpu_saves_fp32_untouched(
    tiny_pair: tuple[Path, Path], examples: list[Example], tmp_path: Path
) -> None:
    teacher = tiny_pair[0]
    result = train_teacher_sft(
        tiny_config(tmp_path, max_steps=1), teacher, examples[:2], max_length=MAX_LENGTH
    )
    assert result.record["precision.save_dtype"] == "float32"
    weights = result.model_dir / "model.safetensors"
    before = weights.read_bytes()
    assert {t.dtype for t in load_file(str(weights)).values()} == {torch.float32}
    assert not cast_saved_weights(result.model_dir, torch.float32) and weights.read_bytes() == before
