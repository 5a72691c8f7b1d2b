"""LoRA through peft, behind one config switch, merged back into plain weights when the stage ends.

Later pipeline steps (the teacher cache, distillation, evaluation, the MLflow model) load a plain
Hugging Face model: they must never need peft or an adapter directory, so `merge_lora` folds the adapters
into the base weights before the final save.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from otdistill.training.config import TrainConfig


def apply_lora(model: nn.Module, config: TrainConfig) -> nn.Module:
    """Wrap `model` with LoRA adapters (only they train); `lora_target_modules=["all-linear"]` by default."""
    from peft import LoraConfig, get_peft_model

    targets: Any = config.lora_target_modules
    if list(targets) == ["all-linear"]:
        targets = "all-linear"
    lora = LoraConfig(
        task_type="CAUSAL_LM",
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
    )
    return get_peft_model(model, lora)


def is_peft_model(model: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def merge_lora(model: nn.Module) -> nn.Module:
    """The plain model with the adapters merged into its weights (the model itself when not a peft model)."""
    if is_peft_model(model):
        return model.merge_and_unload()  # type: ignore[operator]
    return model
