"""The promotion gate, on its cases, against a real MLflow registry (SQLite) with the tiny student.

The evaluation scores of the candidate and the SFT baseline are inputs of the step (it reads the evaluate
step's scores.json), so the tests write them; the current champion is really re-scored on the validation
rows (the tiny random student scores 0.0 there), which is what makes "better" / "worse" deterministic.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from otdistill.config import RunConfig
from otdistill.steps.register_and_promote import check_gate, register_and_promote
from otdistill.tracking import open_pipeline_run

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "dialogsum"


def test_gate_first_model_is_promoted_when_it_beats_the_baseline() -> None:
    gate = check_gate(0.30, 0.25, None, margin=0.01)
    assert gate.passed and "no champion yet" in gate.reason


def test_gate_better_than_champion_and_baseline() -> None:
    gate = check_gate(0.30, 0.20, 0.25, margin=0.01, champion_version="3")
    assert gate.passed and "beats champion v3" in gate.reason


def test_gate_worse_than_champion() -> None:
    gate = check_gate(0.30, 0.20, 0.35, margin=0.0)
    assert gate.beats_baseline and not gate.beats_champion and not gate.passed


def test_gate_within_margin_is_not_enough() -> None:
    assert not check_gate(0.305, 0.20, 0.30, margin=0.01).passed
    assert not check_gate(0.30, 0.20, 0.30, margin=0.0).passed  # a tie never promotes
    assert check_gate(0.311, 0.20, 0.30, margin=0.01).passed


def test_gate_worse_than_sft_baseline() -> None:
    gate = check_gate(0.30, 0.31, None, margin=0.0)
    assert not gate.beats_baseline and not gate.passed
    assert "does not beat the SFT baseline" in gate.reason


def test_gate_lower_is_better_and_no_baseline() -> None:
    gate = check_gate(1.5, None, 2.0, margin=0.1, greater_is_better=False)
    assert gate.passed and "no SFT baseline" in gate.reason
    assert not check_gate(1.95, None, 2.0, margin=0.1, greater_is_better=False).passed
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
            "tracking": {"tracking_uri": uri, "experiment": "gate", "registered_model_name": "tiny-gate"},
        }
    )
    val = tmp_path / "validation"
    val.mkdir()
    with open(SHARED / "validation.jsonl", encoding="utf-8") as src:
        (val / "validation.jsonl").write_text("".join(src.readlines()[:3]), encoding="utf-8")
    return {
        "cfg": cfg,
        "student": student,
        "val": val,
        "tmp": tmp_path,
        "client": MlflowClient(tracking_uri=uri, registry_uri=uri),
    }


def _register(reg: dict[str, object], name: str, distilled: float, baseline: float | None):  # type: ignore[no-untyped-def]
    cfg: RunConfig = reg["cfg"]  # type: ignore[assignment]
    tmp: Path = reg["tmp"]  # type: ignore[assignment]
    parent = open_pipeline_run(cfg.tracking, name, pipeline_run_id=name)
    models = {"distilled": {"rougeLsum": distilled}}
    if baseline is not None:
        models["sft_baseline"] = {"rougeLsum": baseline}
    scores = tmp / f"{name}-scores.json"
    scores.write_text(json.dumps({"models": models, "metric": "rougeLsum"}))
    return register_and_promote(
        cfg.section_json("register_and_promote"),
        parent.run_id,
        "a" * 64,
        reg["val"],  # type: ignore[arg-type]
        reg["student"],  # type: ignore[arg-type]
        scores,
        tmp / f"{name}-decision.json",
    )


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
    assert v2.tags["otdistill.eval.distilled.rougeLsum"] == "0.3"
    assert v2.tags["otdistill.lineage.data_hash"] == "a" * 64
    # re-running the step for the same pipeline run registers nothing new
    again = _register(registry, "run-b", 0.30, 0.20)
    assert again.version == "2" and len(client.search_model_versions("name='tiny-gate'")) == 2
    # the champion (recorded 0.30) is re-scored on this run's rows: the tiny model scores 0.0 there, so
    # a candidate within the margin of 0.0 loses ...
    within = _register(registry, "run-c", 0.0, None)
    assert not within.promoted and _champion(registry) == "2"
    v3 = client.get_model_version("tiny-gate", "3")
    assert v3.tags["otdistill.gate.champion"] == "0.0" and v3.tags["otdistill.gate.champion_version"] == "2"
    assert client.get_model_version("tiny-gate", "2").tags["otdistill.metric.rougeLsum.previous"] == "0.3"
    # ... and one that beats the re-scored champion (though not its recorded 0.30) wins
    better = _register(registry, "run-d", 0.05, 0.01)
    assert better.promoted and _champion(registry) == "4"
    assert str(client.get_model_version_by_alias("tiny-gate", "challenger").version) == "4"
    decision = json.loads((registry["tmp"] / "run-d-decision.json").read_text())  # type: ignore[operator]
    assert decision["model_uri"] == "models:/tiny-gate/4" and decision["promoted"] is True
