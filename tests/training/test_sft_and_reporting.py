"""Teacher SFT (full and LoRA merged), reproducible loss curves, MLflow metrics (validation loss included),
precision choice."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from otdistill.data import Example
from otdistill.training import choose_precision, distill_student, train_teacher_sft
from otdistill.training.precision import PrecisionChoice
from tests.training.conftest import MAX_LENGTH, tiny_config


@pytest.mark.parametrize("lora", [False, True])
def test_teacher_sft_saves_a_plain_model(
    lora: bool, tiny_pair: tuple[Path, Path], examples: list[Example], tmp_path: Path
) -> None:
    teacher = tiny_pair[0]
    cfg = tiny_config(
        tmp_path, lora=lora, lora_r=4, lora_alpha=8, lora_dropout=0.0, max_steps=3, learning_rate=5e-3
    )
    result = train_teacher_sft(cfg, teacher, examples, max_length=MAX_LENGTH)
    assert result.stage == "teacher_sft" and result.global_step == 3
    assert all(set(k for k in row if k.startswith("loss_")) == {"loss_ce"} for row in result.history)
    files = {p.name for p in result.model_dir.iterdir()}
    assert "model.safetensors" in files and "adapter_config.json" not in files and "tokenizer.json" in files
    before, after = (
        load_file(str(teacher / "model.safetensors")),
        load_file(str(result.model_dir / "model.safetensors")),
    )
    assert before.keys() == after.keys()  # merged: plain parameter names, no lora_A / lora_B
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed
    if lora:  # LoRA on all linear layers: embeddings and norms are untouched
        assert all("proj" in k for k in changed), changed
    AutoModelForCausalLM.from_pretrained(result.model_dir)


@pytest.fixture
def restore_determinism() -> Iterator[None]:
    """`deterministic=True` switches torch's deterministic algorithms on process-wide: switch them back."""
    before = torch.are_deterministic_algorithms_enabled()
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def test_two_runs_of_one_config_give_the_same_loss_curve(
    tiny_pair: tuple[Path, Path], examples: list[Example], tmp_path: Path, restore_determinism: None
) -> None:
    teacher, student = tiny_pair
    runs = [
        distill_student(
            tiny_config(tmp_path / str(i), deterministic=True, max_steps=3, save_steps=10),
            student, teacher, examples, max_length=MAX_LENGTH,
        )
        for i in range(2)
    ]  # fmt: skip
    keys = ("loss", "loss_ce", "loss_had", "loss_sl", "loss_sd", "grad_norm")
    curves = [[tuple(row[k] for k in keys) for row in r.history] for r in runs]
    assert curves[0] == curves[1]
    assert runs[0].record["determinism"]["torch.deterministic_algorithms"] is True


def test_metrics_go_to_the_active_mlflow_run(
    tiny_pair: tuple[Path, Path], examples: list[Example], tmp_path: Path
) -> None:
    teacher, student = tiny_pair
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run() as run:
            cfg = tiny_config(tmp_path / "out", max_steps=2, save_steps=10, eval_every_steps=2)
            result = distill_student(
                cfg, student, teacher, examples[4:], validation=examples[:4], max_length=MAX_LENGTH
            )
        client = MlflowClient(tracking_uri=uri)
        for name in (
            "loss",
            "loss_ce",
            "loss_had",
            "loss_sl",
            "loss_sd",
            "learning_rate",
            "tokens_per_second",
        ):
            history = client.get_metric_history(run.info.run_id, f"train/{name}")
            assert [m.step for m in history] == [1, 2], name
        assert client.get_metric_history(run.info.run_id, "train/memory_gb")[0].value > 0
        # every eval_every_steps (2) steps, the student's response cross-entropy on the validation rows:
        # about ln(400) for the random tiny student (the cache would hold no validation rows)
        validation = client.get_metric_history(run.info.run_id, "val/loss")
        assert [(m.step, m.value) for m in validation] == [(2, result.validation_history[0]["val/loss"])]
        assert 0 < validation[0].value < 3 * math.log(400)
        assert result.record["validation_examples"] == 4 and not result.stopped_early
        params = client.get_run(run.info.run_id).data.params
        assert params["distill.precision.name"] == "fp32" and params["distill.determinism.seed"] == "42"
        assert params["distill.determinism.torch.num_threads"] == str(torch.get_num_threads())
    finally:
        mlflow.set_tracking_uri(previous)


def test_precision_is_fp32_on_cpu_and_bf16_refused_there() -> None:
    choice = choose_precision("auto")
    assert choice == PrecisionChoice("fp32", "cpu", "auto: no CUDA device") and not choice.bf16
    assert choice.teacher_dtype == torch.float32
    with pytest.raises(ValueError, match="does not support bf16"):
        choose_precision("bf16")


def test_precision_auto_picks_bf16_on_a_bf16_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GPU here: CUDA availability and bf16 support are mocked; the choice logic is what runs."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    choice = choose_precision("auto")
    assert choice.name == "bf16" and choice.device == "cuda" and choice.teacher_dtype == torch.bfloat16
    assert choice.record()["precision.name"] == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert choose_precision("auto").name == "fp32"
