"""open_run: merges pipeline parameters into the base config, opens the parent run, splits per step."""

import json
from pathlib import Path

import pytest
from kfp import dsl

from otdistill.components.conftest import Env
from otdistill.components.open_run.component import open_run
from otdistill.config import ConfigError, pipeline_parameter_defaults


def test_open_run_applies_parameters_and_opens_the_parent(env: Env) -> None:
    params = pipeline_parameter_defaults(env.cfg)
    params["distill_learning_rate"] = 0.125
    params["data_revision"] = ""
    out = env.artifact(dsl.Artifact, "open-run-config")
    result = open_run.python_func(
        base_config=env.cfg.to_json(),
        pipeline_run_id="kfp-1",
        pipeline_run_name="run-1",
        run_config=out,
        **params,
    )
    distill = json.loads(result[5])  # declared order: ..., distill_student, evaluate, register, parent id
    assert distill["distill"]["learning_rate"] == 0.125
    assert set(json.loads(result[0])) == {"name", "teacher", "student", "data", "validation", "tracking"}
    import mlflow

    parent = mlflow.get_run(result[-1])
    assert parent.data.params["distill.learning_rate"] == "0.125"
    assert "learning_rate: 0.125" in Path(out.path).read_text()


def test_open_run_rejects_an_invalid_parameter_value(env: Env) -> None:
    params = pipeline_parameter_defaults(env.cfg)
    params["distill_learning_rate"] = -1.0
    with pytest.raises(ConfigError, match="learning_rate must be > 0"):
        open_run.python_func(
            base_config=env.cfg.to_json(),
            pipeline_run_id="kfp-2",
            pipeline_run_name="run-2",
            run_config=env.artifact(dsl.Artifact, "open-run-bad"),
            **params,
        )
