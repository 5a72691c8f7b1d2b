"""train_sft: fine-tunes the teacher or the student one step and writes a loadable Model artifact."""

import json
from pathlib import Path

import pytest
from kfp import dsl
from transformers import AutoModelForCausalLM

from otdistill.components.conftest import Env, Upstream
from otdistill.components.train_sft.component import train_sft


@pytest.mark.parametrize(("role", "step"), [("teacher", "train_teacher"), ("student", "train_sft_baseline")])
def test_train_sft_writes_a_trained_model(env: Env, upstream: Upstream, role: str, step: str) -> None:
    model = env.artifact(dsl.Model, f"sft-{role}")
    metrics = env.artifact(dsl.Metrics, f"sft-{role}-metrics")
    train_sft.python_func(
        config=env.section(step),
        role=role,
        train_data=upstream.train,
        model=model,
        metrics=metrics,
    )
    assert model.metadata["kind"] == "trained" and model.metadata["stage"] == step
    assert model.metadata["global_step"] == "1"
    assert metrics.metadata["train_loss"] > 0
    assert json.loads(Path(metrics.path).read_text()) == metrics.metadata  # the file kfp.local needs
    assert AutoModelForCausalLM.from_pretrained(Path(model.path)) is not None
