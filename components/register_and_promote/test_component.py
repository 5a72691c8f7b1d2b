"""register_and_promote: registers the distilled student (first one: champion) and returns its URI."""

import json
from pathlib import Path

from kfp import dsl
from mlflow.tracking import MlflowClient

from otdistill.components.conftest import Env, Upstream
from otdistill.components.register_and_promote.component import register_and_promote
from otdistill.tracking import open_pipeline_run


def test_register_first_student_becomes_champion(env: Env, upstream: Upstream) -> None:
    parent = open_pipeline_run(env.cfg.tracking, "register-test", pipeline_run_id="register-test")
    scores = env.artifact(dsl.Artifact, "reg-scores")
    Path(scores.path).write_text(json.dumps({"models": {"distilled": {"rougeLsum": 0.2}}}))
    champion_scores = env.artifact(dsl.Artifact, "reg-champion")  # score_champion's, with no champion yet
    Path(champion_scores.path).parent.mkdir(parents=True, exist_ok=True)
    Path(champion_scores.path).write_text(json.dumps({"version": "", "source": "none", "metrics": {}}))
    decision = env.artifact(dsl.Artifact, "reg-decision")
    model_uri, version, promoted = register_and_promote.python_func(
        config=env.section("register_and_promote"),
        parent_run_id=parent.run_id,
        data_hash=upstream.data_hash,
        validation_data=upstream.validation,
        student_model=upstream.distilled,
        scores=scores,
        champion_scores=champion_scores,
        decision=decision,
    )
    assert (model_uri, version, promoted) == ("models:/comp/1", "1", True)
    assert json.loads(Path(decision.path).read_text())["status"] == "promoted"
    client = MlflowClient(env.cfg.tracking.tracking_uri)
    assert client.get_run(parent.run_id).info.status == "RUNNING"  # the exit handler (close_run) ends it
    assert client.get_model_version("comp", "1").tags["otdistill.lineage.data_hash"] == upstream.data_hash
