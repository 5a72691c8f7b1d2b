"""register_and_promote: registers the distilled student (first one: champion), returns its URI, and
writes the gate decision as JSON and as Markdown for the KFP UI; a second, worse student is registered
but the champion (scored on the same rows by score_champion) keeps the alias."""

import json
from pathlib import Path

from kfp import dsl
from mlflow.tracking import MlflowClient

from otdistill.components.conftest import Env, Upstream
from otdistill.components.register_and_promote.component import register_and_promote
from otdistill.tracking import open_pipeline_run

KEY = "otdistill.scores.component-test"
ROWS = ("row-1", "row-2")


def _register(
    env: Env,
    upstream: Upstream,
    run: str,
    models: dict[str, dict[str, float]],
    champion: dict[str, object],
    attempt: int = 1,
) -> tuple[tuple[str, str, bool], dsl.Artifact, dsl.Markdown, str]:
    """Run the component for pipeline run `run` with evaluate's scores `models` and score_champion's
    output `champion` (`attempt`: a retry's number, for fresh artifact paths); returns its outputs, the
    decision artifacts and the parent run id."""
    parent = open_pipeline_run(env.cfg.tracking, run, pipeline_run_id=run)
    scores = env.artifact(dsl.Artifact, f"{run}-{attempt}-scores")
    Path(scores.path).parent.mkdir(parents=True, exist_ok=True)
    # per-row scores (the bootstrap gate's input): both rows at each model's mean
    rows = {label: dict.fromkeys(ROWS, m) for label, m in models.items()}
    Path(scores.path).write_text(json.dumps({"models": models, "row_scores": rows, "score_key": KEY}))
    champion_scores = env.artifact(dsl.Artifact, f"{run}-{attempt}-champion")
    champion_rows = dict.fromkeys(ROWS, champion["metrics"]) if champion["metrics"] else {}
    Path(champion_scores.path).write_text(json.dumps({"score_key": KEY, "rows": champion_rows, **champion}))
    decision = env.artifact(dsl.Artifact, f"{run}-{attempt}-decision")
    report = env.artifact(dsl.Markdown, f"{run}-{attempt}-report")
    outputs = register_and_promote.python_func(
        config=env.section("register_and_promote"),
        parent_run_id=parent.run_id,
        data_hash=upstream.data_hash,
        validation_data=upstream.validation,
        student_model=upstream.distilled,
        scores=scores,
        champion_scores=champion_scores,
        decision=decision,
        decision_report=report,
    )
    return tuple(outputs), decision, report, parent.run_id


def test_register_first_student_becomes_champion_then_a_worse_one_does_not(
    env: Env, upstream: Upstream
) -> None:
    no_champion = {"version": "", "source": "none", "metrics": {}}
    outputs, decision, report, parent_id = _register(
        env, upstream, "register-test", {"distilled": {"rougeLsum": 0.2}}, no_champion
    )
    assert outputs == ("models:/comp/1", "1", True)
    assert json.loads(Path(decision.path).read_text())["status"] == "promoted"
    text = Path(report.path).read_text()
    assert "**Decision: promoted**" in text and "`models:/comp/1`" in text
    assert "| Candidate: distilled student v1 | 0.2 |" in text
    assert "| SFT baseline | not trained in this run |" in text and "| Champion | none yet |" in text
    assert "`champion` now on v1: `models:/comp@champion`" in text
    client = MlflowClient(env.cfg.tracking.tracking_uri)
    assert client.get_run(parent_id).info.status == "RUNNING"  # the exit handler (close_run) ends it
    assert client.get_model_version("comp", "1").tags["otdistill.lineage.data_hash"] == upstream.data_hash

    # A second run: it beats its SFT baseline but not the champion v1, scored 0.25 on these rows.
    scored = {"version": "1", "source": "scored", "metrics": {"rougeLsum": 0.25}}
    models = {"distilled": {"rougeLsum": 0.1}, "sft_baseline": {"rougeLsum": 0.05}}
    outputs, decision, report, _ = _register(env, upstream, "register-test-2", models, scored)
    assert outputs == ("models:/comp/2", "2", False)
    text = Path(report.path).read_text()
    # A retry of the same pipeline run registers nothing and reports the same decision (from v2's tags).
    again, _, report_again, _ = _register(env, upstream, "register-test-2", models, scored, attempt=2)
    assert again == outputs and Path(report_again.path).read_text() == text
    assert "**Decision: not promoted**" in text and "(status `rejected`)" in text
    assert "Reason: rougeLsum=0.1 vs champion v1 0.25" in text  # the registry's reason, and the gate's:
    assert "Gate: candidate 0.1: beats the SFT baseline 0.05" in text
    assert "does not beat champion v1 at 0.25 on these rows" in text
    assert "| Candidate: distilled student v2 | 0.1 |" in text
    # the gain, its bootstrap interval (a constant difference on both rows) and the number of rows
    assert "| SFT baseline (this run) | 0.05 | +0.05 [+0.05, +0.05] (2) | yes | evaluate |" in text
    assert "| Champion v1 | 0.25 | -0.15 [-0.15, -0.15] (2) | no | scored by score_champion |" in text
    assert "`champion` stays on v1: `models:/comp@champion`" in text
    assert "`models:/comp/2` (alias `challenger`: `models:/comp@challenger`)" in text
    assert "| sft_baseline | 0.05 |" in text  # every evaluated model's score
    assert str(client.get_model_version_by_alias("comp", "champion").version) == "1"
