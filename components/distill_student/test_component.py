"""distill_student: distils from the cache alone (no teacher model: the cache carries the teacher's
tokenizer and record) and writes the student with its lineage metadata."""

import json
from pathlib import Path

import pytest
from kfp import dsl
from transformers import AutoModelForCausalLM

from otdistill.components.conftest import Env, Upstream
from otdistill.config import RunConfig
from otdistill.steps.common import read_model_info
from otdistill.teacher_cache.teacher_files import TEACHER_TOKENIZER


def test_distilled_student_is_a_model_with_lineage(upstream: Upstream) -> None:
    meta = upstream.distilled.metadata
    assert meta["loss"] == "multilevel_ot" and meta["kind"] == "trained" and meta["dtype"] == "float32"
    assert meta["teacher_revision"].startswith("sha256:")
    # the teacher's identity came with the cache, and is the teacher artifact's own
    teacher = read_model_info(upstream.teacher.path)
    assert (meta["teacher_source"], meta["teacher_revision"]) == (teacher["source"], teacher["revision"])
    assert (Path(upstream.cache.path) / TEACHER_TOKENIZER / "tokenizer_config.json").is_file()
    assert AutoModelForCausalLM.from_pretrained(Path(upstream.distilled.path)) is not None


def test_a_live_teacher_loss_without_the_teacher_model_is_refused(env: Env, upstream: Upstream) -> None:
    """ "kl" needs the teacher's weights: a pipeline compiled for a cache-reading loss, run with the `loss`
    parameter set to "kl", stops before training and says how to get the teacher model passed."""
    from otdistill.components.distill_student.component import distill_student

    data = json.loads(env.section("distill_student"))
    data["distill"]["loss"] = "kl"
    with pytest.raises(ValueError, match="distill.loss 'kl' needs the live teacher.*no teacher_model"):
        distill_student.python_func(
            config=RunConfig.from_dict(data).section_json("distill_student"),
            teacher_cache=upstream.cache,
            train_data=upstream.train,
            student_model=env.artifact(dsl.Model, "kl-student"),
            metrics=env.artifact(dsl.Metrics, "kl-metrics"),
        )
