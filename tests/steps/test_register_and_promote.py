"""The promotion gate, on its cases, against a real MLflow registry (SQLite) with the tiny student.

The evaluation scores of the candidate and the SFT baseline are inputs of the step (it reads the evaluate
step's scores.json), so the tests set them; the current champion is really scored on the validation
rows by the `score_champion` step, as in the pipeline (the tiny random student scores 0.0 there, which
makes "better" / "worse" deterministic), or its score recorded by an earlier run on the same rows reused.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from otdistill.config import RunConfig
from otdistill.data import DataConfig, load_examples
from otdistill.steps.common import RUN_ID_ENV
from otdistill.steps.register_and_promote import check_gate, register_and_promote
from otdistill.steps.score_champion import score_champion
from otdistill.tracking import open_pipeline_run
from otdistill.tracking.scores import champion_version, version_uri

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "dialogsum"


# The point method compares the means, as the gate did before the bootstrap (`tests/steps/test_gate.py`).
def test_gate_first_model_is_promoted_when_it_beats_the_baseline() -> None:
    gate = check_gate(0.30, 0.25, None, margin=0.01, method="point")
    assert gate.passed and "no champion yet" in gate.reason


def test_gate_better_than_champion_and_baseline() -> None:
    gate = check_gate(0.30, 0.20, 0.25, margin=0.01, champion_version="3", method="point")
    assert gate.passed and "beats champion v3" in gate.reason


def test_gate_worse_than_champion() -> None:
    gate = check_gate(0.30, 0.20, 0.35, margin=0.0, method="point")
    assert gate.beats_baseline and not gate.beats_champion and not gate.passed


def test_gate_within_margin_is_not_enough() -> None:
    assert not check_gate(0.305, 0.20, 0.30, margin=0.01, method="point").passed
    assert not check_gate(0.30, 0.20, 0.30, margin=0.0, method="point").passed  # a tie never promotes
    assert not check_gate(0.55, 0.50, None, margin=0.05, method="point").passed  # equal up to rounding
    assert check_gate(0.311, 0.20, 0.30, margin=0.01, method="point").passed


def test_gate_worse_than_sft_baseline() -> None:
    gate = check_gate(0.30, 0.31, None, margin=0.0, method="point")
    assert not gate.beats_baseline and not gate.passed
    assert "does not beat the SFT baseline" in gate.reason


def test_gate_lower_is_better_and_no_baseline() -> None:
    gate = check_gate(1.5, None, 2.0, margin=0.1, greater_is_better=False, method="point")
    assert gate.passed and "no SFT baseline" in gate.reason
    assert not check_gate(1.95, None, 2.0, margin=0.1, greater_is_better=False, method="point").passed
    with pytest.raises(ValueError, match="finite"):
        check_gate(math.nan, None, None, margin=0.0)


@pytest.fixture()
def registry(tmp_path: Path, tiny_pair: tuple[Path, Path]) -> dict[str, object]:
    _, student = tiny_pair
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment("gate", artifact_location=(tmp_path / "artifacts").as_uri())
    cfg = RunConfig.from_dict(
        {
            "student": {"source": str(student)},
            "data": {"task": "dialogsum", "source": str(SHARED), "max_length": 128},
            "validation": {"split": "validation"},
            "eval": {"max_new_tokens": 4, "batch_size": 4, "device": "cpu", "progress": False},
            "tracking": {
                "tracking_uri": uri,
                "experiment": "gate",
                "registered_model_name": "tiny-gate",
                "system_metrics_interval_s": 0.2,  # the step runs last seconds
            },
        }
    )
    val = tmp_path / "validation"
    val.mkdir()
    with open(SHARED / "validation.jsonl", encoding="utf-8") as src:
        (val / "validation.jsonl").write_text("".join(src.readlines()[:3]), encoding="utf-8")
    # the report prepare_data writes beside a snapshot (the MLflow dataset the steps log is made from it)
    report = load_examples(DataConfig(task="dialogsum", source=str(val), split="validation")).report
    (val / "data_report.json").write_text(report.to_json(), encoding="utf-8")
    return {
        "cfg": cfg,
        "student": student,
        "val": val,
        "tmp": tmp_path,
        "client": MlflowClient(tracking_uri=uri, registry_uri=uri),
    }


def _register(  # type: ignore[no-untyped-def]
    reg: dict[str, object],
    name: str,
    distilled: float,
    baseline: float | None,
    after_scoring: Callable[[], object] | None = None,
    cfg: RunConfig | None = None,
):
    """One run's score_champion + register_and_promote: the champion of the moment is scored (or its
    recorded score reused); the candidate's and the baseline's scores (evaluate's) are the given numbers."""
    cfg = cfg or reg["cfg"]  # type: ignore[assignment]
    assert cfg is not None
    tmp: Path = reg["tmp"]  # type: ignore[assignment]
    client: MlflowClient = reg["client"]  # type: ignore[assignment]
    parent = open_pipeline_run(cfg.tracking, name, pipeline_run_id=name)
    version = champion_version(client, "tiny-gate", "champion")  # what open_run hands on
    champion_scores = tmp / f"{name}-champion.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(RUN_ID_ENV, name)
        champion = score_champion(
            cfg.section_json("score_champion"),
            reg["val"],  # type: ignore[arg-type]
            version_uri("tiny-gate", version) if version else "",
            champion_scores,
        )
    models = {"distilled": {"rougeLsum": distilled}}
    if baseline is not None:
        models["sft_baseline"] = {"rougeLsum": baseline}
    # evaluate's per-row scores: every validation row at the model's mean (the bootstrap interval of a
    # constant difference is that difference, so these cases decide as the means do)
    ids = [json.loads(line)["fname"] for line in (reg["val"] / "validation.jsonl").read_text().splitlines()]  # type: ignore[operator]
    rows = {label: {i: dict(m) for i in ids} for label, m in models.items()}
    scores = tmp / f"{name}-scores.json"
    scores.write_text(
        json.dumps(
            {"models": models, "row_scores": rows, "metric": "rougeLsum", "score_key": champion.score_key}
        )
    )
    if after_scoring is not None:
        after_scoring()
    return register_and_promote(
        cfg.section_json("register_and_promote"),
        parent.run_id,
        "a" * 64,
        reg["val"],  # type: ignore[arg-type]
        reg["student"],  # type: ignore[arg-type]
        scores,
        tmp / f"{name}-decision.json",
        champion_scores,
    )


def _scores(reg: dict[str, object], name: str) -> dict[str, Any]:
    """The run's scores as the gate saw them: evaluate's `score_key`, score_champion's champion."""
    tmp: Path = reg["tmp"]  # type: ignore[assignment]
    scores = dict(json.loads((tmp / f"{name}-scores.json").read_text()))
    return {**scores, "champion": json.loads((tmp / f"{name}-champion.json").read_text())}


def _champion(reg: dict[str, object]) -> str:
    client: MlflowClient = reg["client"]  # type: ignore[assignment]
    return str(client.get_model_version_by_alias("tiny-gate", "champion").version)


def test_gate_cases_against_the_registry(registry: dict[str, object]) -> None:
    client: MlflowClient = registry["client"]  # type: ignore[assignment]
    # worse than its SFT baseline: registered (challenger), not champion, even with no champion yet
    worse_sft = _register(registry, "run-a", 0.10, 0.20)
    assert (worse_sft.version, worse_sft.promoted, worse_sft.status) == ("1", False, "rejected")
    assert str(client.get_model_version_by_alias("tiny-gate", "challenger").version) == "1"
    # first model that beats its baseline: champion
    first = _register(registry, "run-b", 0.30, 0.20)
    assert (first.version, first.promoted) == ("2", True) and _champion(registry) == "2"
    v2 = client.get_model_version("tiny-gate", "2")
    assert v2.tags["otdistill.gate.beats_baseline"] == "True"
    # the bootstrap decision's interval and rows are tags too (a constant +0.1 on each of the 3 rows)
    assert v2.tags["otdistill.gate.method"] == "bootstrap" and v2.tags["otdistill.gate.baseline_rows"] == "3"
    assert float(v2.tags["otdistill.gate.baseline_low"]) == pytest.approx(0.1)
    assert v2.tags["otdistill.eval.distilled.rougeLsum"] == "0.3"
    assert v2.tags["otdistill.lineage.data_hash"] == "a" * 64
    _check_version_record(client, v2)
    # re-running the step for the same pipeline run registers nothing new
    again = _register(registry, "run-b", 0.30, 0.20)
    assert again.version == "2" and len(client.search_model_versions("name='tiny-gate'")) == 2
    # every registered version keeps its scores on the run's rows under the run's score key
    key = _scores(registry, "run-b")["score_key"]
    assert json.loads(v2.tags[key]) == {"rougeLsum": 0.3}
    assert v2.tags[key + ".rows"].startswith("runs:/")  # its per-row scores, for the next bootstrap
    # the next run on the same rows and scoring settings reuses the champion's recorded score:
    # score_champion does not generate with it again; a candidate below it loses
    within = _register(registry, "run-c", 0.0, None)
    assert _scores(registry, "run-c")["champion"]["source"] == "recorded"
    assert not within.promoted and _champion(registry) == "2"
    v3 = client.get_model_version("tiny-gate", "3")
    assert v3.tags["otdistill.gate.champion"] == "0.3" and v3.tags["otdistill.gate.champion_version"] == "2"
    # other scoring settings (a shorter generation budget): the recorded score is not comparable, so
    # score_champion scores the champion on the GPU side; the tiny model scores 0.0 there, and one that beats
    # that score (though not the recorded 0.30) wins
    shorter = registry["cfg"].with_overrides({"eval.max_new_tokens": 3})  # type: ignore[attr-defined]
    better = _register(registry, "run-d", 0.05, 0.01, cfg=shorter)
    scored = _scores(registry, "run-d")
    assert scored["champion"]["source"] == "scored" and scored["score_key"] != key
    assert scored["champion"]["metrics"]["rougeLsum"] == 0.0
    assert better.promoted and _champion(registry) == "4"
    v2 = client.get_model_version("tiny-gate", "2")
    assert json.loads(v2.tags[scored["score_key"]])["rougeLsum"] == 0.0
    assert v2.tags["otdistill.metric.rougeLsum.previous"] == "0.3"
    assert str(client.get_model_version_by_alias("tiny-gate", "challenger").version) == "4"
    decision = json.loads((registry["tmp"] / "run-d-decision.json").read_text())  # type: ignore[operator]
    assert decision["model_uri"] == "models:/tiny-gate/4" and decision["promoted"] is True
    # the champion moves during a run (after its score_champion) to a version with no score on these rows and
    # settings (v3 was scored with the longer budget only): the light gate step does not score it; the
    # candidate is not promoted, and the reason says why
    moved = _register(
        registry,
        "run-e",
        0.9,
        0.01,
        after_scoring=lambda: client.set_registered_model_alias("tiny-gate", "champion", "3"),
        cfg=shorter,
    )
    assert not moved.promoted and _champion(registry) == "3"
    assert "took the alias after this run's score_champion (v4)" in moved.reason


def _check_version_record(client: MlflowClient, mv: Any) -> None:
    """What the MLflow UI shows of a registered version: its description (provenance, scores, the gate with
    its numbers) and its logged model's metrics (the evaluation on the validation dataset, the gate)."""
    import mlflow

    text = mv.description
    assert "| Training data (sha256 of the kept rows) | `" + "a" * 64 + "` |" in text
    assert "| Weights (sha256 of the tensors) | `" + mv.tags["otdistill.weights_sha256"] + "` |" in text
    assert "| distilled | 0.3 |" in text and "| sft_baseline | 0.2 |" in text  # the scores table
    assert "## Promotion gate: tiny-gate v2" in text and "**Decision: promoted**" in text
    assert "| SFT baseline (this run) | 0.2 | +0.1 [+0.1, +0.1] (3) | yes | evaluate |" in text
    assert mv.source.startswith("models:/m-")  # the version is made from the logged model (MLflow 3)
    logged = mlflow.get_logged_model(mv.source.removeprefix("models:/"))
    by_name = {m.key: m for m in logged.metrics or []}
    assert by_name["eval/distilled/rougeLsum"].value == 0.3
    assert by_name["eval/distilled/rougeLsum"].dataset_name == "dialogsum/validation"
    assert by_name["gate/candidate"].value == 0.3 and by_name["gate/baseline"].value == 0.2
    assert by_name["gate/beats_baseline"].value == 1.0 and by_name["gate/promoted"].value == 1.0
    run = client.get_run(mv.run_id)
    assert {"eval/distilled/rougeLsum", "gate/margin", "gate/promoted"} <= set(run.data.metrics)
    assert any(k.startswith("system/") for k in run.data.metrics)  # the step run's system metrics
