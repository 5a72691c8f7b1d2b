"""Validation during training: early stopping, the best checkpoint kept, the rows it needs.

(`val/loss` every `eval_every_steps` in MLflow: test_sft_and_reporting.py's metrics test.)"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from otdistill.data import Example
from otdistill.training import train_teacher_sft
from tests.training.conftest import MAX_LENGTH, tiny_config


def test_a_run_needs_its_validation_rows(
    tiny_pair: tuple[Path, Path], examples: list[Example], tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="eval_every_steps is 1 but no validation data was given"):
        train_teacher_sft(
            tiny_config(tmp_path, eval_every_steps=1), tiny_pair[0], examples, max_length=MAX_LENGTH
        )


def test_early_stopping_keeps_the_best_checkpoint(
    tiny_pair: tuple[Path, Path], examples: list[Example], tmp_path: Path
) -> None:
    """Trained on responses of one repeated token at a high learning rate, the teacher gets worse on the
    real validation summaries after its first step: training stops after `patience` evaluations without
    improvement and ends with the first step's weights, whose checkpoint survives rotation."""
    teacher = tiny_pair[0]
    degenerate = [dataclasses.replace(e, response="x " * 30) for e in examples[:4]]
    cfg = tiny_config(
        tmp_path,
        max_steps=8,
        learning_rate=0.2,
        eval_every_steps=1,
        save_steps=1,
        save_total_limit=1,
        early_stopping_patience=2,
        early_stopping_min_delta=0.01,
        keep_best_checkpoint=True,
    )
    result = train_teacher_sft(cfg, teacher, degenerate, validation=examples[4:8], max_length=MAX_LENGTH)
    losses = [h["val/loss"] for h in result.validation_history]
    assert result.global_step == 3 and result.stopped_early, losses  # best at 1, then 2 without improving
    assert losses[0] < losses[1] and losses[0] < losses[2]
    assert result.best_step == 1 and result.best_val_loss == losses[0]
    kept = sorted(p.name for p in tmp_path.glob("checkpoint-*"))
    assert kept == ["checkpoint-1"]  # the best outlives save_total_limit 1
    state = json.loads((tmp_path / "checkpoint-1" / "trainer_state.json").read_text())
    assert state["best_model_checkpoint"] == str(tmp_path / "checkpoint-1")  # not its staging path
    best = load_file(str(tmp_path / "checkpoint-1" / "model.safetensors"))
    final = load_file(str(result.model_dir / "model.safetensors"))
    assert best.keys() == final.keys() and all(torch.equal(best[k], final[k]) for k in best)
