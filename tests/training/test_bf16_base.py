"""Under bf16, a base that is frozen (LoRA) or sharded (FSDP) is loaded in bf16: a 7B teacher never sits
in memory in fp32 for that. LoRA's adapters still train in fp32.

This machine has no bf16 GPU: the runner's precision choice is set to bf16 on the CPU (a stand-in for the
GPU's bf16 support; transformers' Trainer runs bf16 autocast on CPUs), everything else is the real path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from otdistill.data import Example
from otdistill.training import runner, train_teacher_sft
from otdistill.training.precision import PrecisionChoice
from tests.training.conftest import MAX_LENGTH, tiny_config

BF16 = PrecisionChoice("bf16", "cpu", "test: stands in for a CUDA GPU with bf16")
FP32 = PrecisionChoice("fp32", "cpu", "requested")


@pytest.mark.parametrize(
    ("precision", "lora", "distributed", "dtype"),
    [
        (BF16, True, "ddp", torch.bfloat16),  # frozen base; adapters fp32 (peft)
        (BF16, False, "fsdp", torch.bfloat16),  # accelerate upcasts the shards to fp32 master weights
        (BF16, False, "ddp", torch.float32),  # full fine-tuning keeps fp32 master weights (autocast)
        (FP32, True, "ddp", torch.float32),
        (FP32, False, "fsdp", torch.float32),
    ],
)
def test_the_trained_base_dtype(precision: PrecisionChoice, lora: bool, distributed: str, dtype: Any) -> None:
    assert precision.trained_dtype(lora=lora, distributed=distributed) == dtype


def test_lora_teacher_sft_on_a_bf16_base(
    tiny_pair: tuple[Path, Path],
    examples: list[Example],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Teacher SFT with LoRA under bf16: the base is loaded in bf16 and stays frozen and unchanged, the
    fp32 adapters train, and the merged model is saved in bf16."""
    teacher, _ = tiny_pair
    monkeypatch.setattr(runner, "choose_precision", lambda requested="auto", use_cpu=False: BF16)
    seen: dict[str, Any] = {}
    real_load, real_lora = runner.load_model, runner.apply_lora

    def load_model(*args: Any, **kwargs: Any) -> Any:
        seen["base"] = model = real_load(*args, **kwargs)
        seen["base_dtypes"] = {p.dtype for p in model.parameters()}
        return model

    def apply_lora(*args: Any, **kwargs: Any) -> Any:
        model = real_lora(*args, **kwargs)
        # the parameters themselves: the optimizer updates them in place; the final merge drops the names
        seen["params"] = dict(model.named_parameters())
        return model

    monkeypatch.setattr(runner, "load_model", load_model)
    monkeypatch.setattr(runner, "apply_lora", apply_lora)
    cfg = tiny_config(
        tmp_path, lora=True, lora_r=4, lora_alpha=8, lora_dropout=0.0, max_steps=3, learning_rate=5e-3
    )
    result = train_teacher_sft(cfg, teacher, examples[:8], max_length=MAX_LENGTH)

    assert seen["base_dtypes"] == {torch.bfloat16}
    assert result.record["precision.name"] == "bf16"
    named = seen["params"]
    adapters = {n: p for n, p in named.items() if "lora_" in n}
    assert adapters and all(p.requires_grad and p.dtype == torch.float32 for p in adapters.values())
    assert all(
        not p.requires_grad and p.dtype == torch.bfloat16 for n, p in named.items() if "lora_" not in n
    )
    # lora_B starts at zero: a non-zero one was trained
    assert any(n.endswith("lora_B.default.weight") and p.abs().max() > 0 for n, p in adapters.items())

    saved = load_file(str(result.model_dir / "model.safetensors"))
    initial = load_file(str(teacher / "model.safetensors"))
    assert {t.dtype for t in saved.values()} == {torch.bfloat16}
    changed = {k for k in saved if not torch.equal(saved[k], initial[k].to(torch.bfloat16))}
    assert changed and all(k.endswith("proj.weight") for k in changed), sorted(changed)
