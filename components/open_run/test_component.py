"""open_run: merges pipeline parameters into the base config, opens the parent run, splits per step."""

import json
import os
import time
from pathlib import Path

import pytest
from kfp import dsl
from mlflow.tracking import MlflowClient

from otdistill.components.conftest import Env
from otdistill.components.open_run.component import open_run
from otdistill.config import ConfigError, pipeline_parameter_defaults
from otdistill.steps.runtime import RUN_ID_ENV
from otdistill.tracking.scores import champion_version, version_uri


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
    names = [n for n in open_run.component_spec.outputs or {} if n != "run_config"]  # the returned values
    outputs = dict(zip(names, result, strict=True))
    distill = json.loads(outputs["distill_student"])
    assert distill["distill"]["learning_rate"] == 0.125
    # a cached step's config holds no tracking section: the gate and the registry do not enter its key
    assert set(json.loads(outputs["prepare_data"])) == {"name", "teacher", "student", "data"}
    assert "tracking" in json.loads(outputs["register_and_promote"])
    # the version holding the champion alias now (another component test may have registered one)
    client = MlflowClient(env.cfg.tracking.tracking_uri)
    holder = champion_version(client, env.cfg.tracking.registered_model_name, env.cfg.tracking.champion_alias)
    assert outputs["champion"] == (
        version_uri(env.cfg.tracking.registered_model_name, holder) if holder else ""
    )
    import mlflow

    parent = mlflow.get_run(outputs["parent_run_id"])
    assert parent.data.params["distill.learning_rate"] == "0.125"
    assert "learning_rate: 0.125" in Path(out.path).read_text()


def test_open_run_prunes_the_stale_checkpoints_of_other_runs(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed run never retried left checkpoints on the model cache: the next run's open_run removes
    them once nothing has written to them for `steps.stale_checkpoint_days`, and keeps recent ones."""
    monkeypatch.setenv("OTDISTILL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(RUN_ID_ENV, "kfp-prune")  # a parent run of its own: its config differs
    stale, recent = (tmp_path / "cache" / "checkpoints" / run / "train_teacher" for run in ("old", "new"))
    for directory, age_days in ((stale, 3.0), (recent, 1.0)):
        directory.mkdir(parents=True)
        (directory / "optimizer.pt").write_bytes(b"\0" * 64)
        stamp = time.time() - age_days * 86400
        for path in (directory / "optimizer.pt", directory, directory.parent):
            os.utime(path, (stamp, stamp))
    cfg = env.cfg.with_overrides({"steps.stale_checkpoint_days": 2})
    open_run.python_func(
        base_config=cfg.to_json(),
        pipeline_run_id="kfp-prune",
        pipeline_run_name="run-prune",
        run_config=env.artifact(dsl.Artifact, "open-run-prune"),
        **pipeline_parameter_defaults(cfg),
    )
    assert not stale.parent.exists() and recent.is_dir()


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
