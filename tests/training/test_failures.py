"""Loud failures: a NaN/inf loss names its step and part; an OOM names the batch size and lengths."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from otdistill.data import Example
from otdistill.training import (
    NonFiniteGradientError,
    NonFiniteLossError,
    TrainingOOMError,
    distill_student,
    train_teacher_sft,
)
from tests.training.conftest import MAX_LENGTH, tiny_config


def _broken_teacher(teacher: Path, out: Path) -> Path:
    """The tiny teacher with NaN embeddings: a real model that produces NaN logits."""
    model = AutoModelForCausalLM.from_pretrained(teacher)
    with torch.no_grad():
        model.get_input_embeddings().weight[5:] = float("nan")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(teacher).save_pretrained(out)
    return out


def test_nan_teacher_stops_at_step_one_naming_the_distillation_parts(
    tiny_pair: tuple[Path, Path], examples: list[Example], tmp_path: Path
) -> None:
    teacher = _broken_teacher(tiny_pair[0], tmp_path / "nan-teacher")
    with pytest.raises(NonFiniteLossError) as info:
        distill_student(tiny_config(tmp_path / "run"), tiny_pair[1], teacher, examples, max_length=MAX_LENGTH)
    err = info.value
    assert err.step == 1
    assert "CE" not in err.bad_parts and {"HAD", "SL", "SD"} & set(err.bad_parts)
    assert "non-finite loss at optimizer step 1" in str(err) and "HAD" in str(err)
    assert err.example_ids and err.example_ids[0] in str(err)
    assert not (tmp_path / "run" / "model").exists()  # no final model from a broken run


def test_exploding_learning_rate_stops_on_the_ce(
    tiny_pair: tuple[Path, Path], examples: list[Example], tmp_path: Path
) -> None:
    """lr=1e8 with no clipping blows the weights up after the first update; the next CE is NaN/inf."""
    cfg = tiny_config(tmp_path, loss="none", learning_rate=1e8, max_grad_norm=0.0, lr_scheduler="constant")
    with pytest.raises(NonFiniteLossError) as info:
        train_teacher_sft(cfg, tiny_pair[0], examples, max_length=MAX_LENGTH)
    assert info.value.step >= 2 and "CE" in info.value.bad_parts
    assert f"optimizer step {info.value.step}" in str(info.value)


def test_nan_gradient_with_finite_loss_stops_before_the_update(
    tiny_pair: tuple[Path, Path], examples: list[Example], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gradient hook turns one weight's gradient into NaN (a real autograd path); the loss stays finite."""
    from otdistill.training import trainer as trainer_module

    original = trainer_module.DistillationTrainer.compute_loss
    hooked: list[torch.utils.hooks.RemovableHandle] = []

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[no-untyped-def]
        if not hooked:
            weight = model.get_input_embeddings().weight
            hooked.append(weight.register_hook(lambda grad: grad * float("nan")))
        return original(self, model, inputs, return_outputs, num_items_in_batch)

    monkeypatch.setattr(trainer_module.DistillationTrainer, "compute_loss", compute_loss)
    student = tiny_pair[1]
    with pytest.raises(
        NonFiniteGradientError, match="at optimizer step 1 although every loss part was finite"
    ):
        distill_student(tiny_config(tmp_path), student, tiny_pair[0], examples, max_length=MAX_LENGTH)
    assert not list(tmp_path.glob("checkpoint-*"))


def test_out_of_memory_names_batch_size_and_lengths(
    tiny_pair: tuple[Path, Path], examples: list[Example], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CPU cannot run out of GPU memory: the OOM is raised by a forward hook (mocked), the rest is real."""
    from otdistill.training import trainer as trainer_module

    original = trainer_module.DistillationTrainer.compute_loss

    def hook(module: torch.nn.Module, args: object, kwargs: dict[str, torch.Tensor]) -> None:
        if kwargs["input_ids"].shape[0] >= 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[no-untyped-def]
        handle = model.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            return original(self, model, inputs, return_outputs, num_items_in_batch)
        finally:
            handle.remove()

    monkeypatch.setattr(trainer_module.DistillationTrainer, "compute_loss", compute_loss)
    cfg = tiny_config(tmp_path, per_device_batch_size=3)
    with pytest.raises(TrainingOOMError) as info:
        distill_student(cfg, tiny_pair[1], tiny_pair[0], examples, max_length=MAX_LENGTH)
    err = info.value
    assert err.batch_size == 3 and err.step == 1
    assert set(err.lengths) == {
        "model_seq_len",
        "model_response_len",
        "teacher_seq_len",
        "teacher_response_len",
    }
    assert all(0 < v <= MAX_LENGTH for v in err.lengths.values())
    message = str(err)
    assert "per-device batch size 3" in message and f"model_seq_len={err.lengths['model_seq_len']}" in message
    assert isinstance(err.__cause__, torch.OutOfMemoryError)
