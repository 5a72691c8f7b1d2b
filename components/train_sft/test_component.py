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


def test_train_sft_validates_on_the_validation_snapshot(env: Env, upstream: Upstream) -> None:
    """With `eval_every_steps` the component takes the validation snapshot and reports its loss."""
    validating = {"eval_every_steps": 1}
    cfg = env.cfg.with_overrides(
        {f"{s}.{k}": v for s in ("sft_baseline", "distill") for k, v in validating.items()}
    )
    model = env.artifact(dsl.Model, "sft-validating")
    metrics = env.artifact(dsl.Metrics, "sft-validating-metrics")
    train_sft.python_func(
        config=cfg.section_json("train_sft_baseline"),
        role="student",
        train_data=upstream.train,
        model=model,
        metrics=metrics,
        validation_data=upstream.validation,
    )
    assert metrics.metadata["val_loss"] > 0
    assert json.loads(Path(metrics.path).read_text()) == metrics.metadata
