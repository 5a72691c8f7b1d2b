"""End-to-end evaluation on the tiny pair and the real shared task data, MLflow included (SQLite store)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from otdistill.data import Example
from otdistill.evaluation import EvalConfig, compare_models, evaluate_model
from otdistill.evaluation.metrics import score
from otdistill.evaluation.results import load_result, read_predictions
from otdistill.models import ModelSpec

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
FAST = EvalConfig(max_new_tokens=8, batch_size=4, max_prompt_tokens=256, progress=False)


def _rows(task: str, n: int) -> list[dict]:
    with open(SHARED / task / "validation.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for _, line in zip(range(n), fh, strict=False)]


def test_dialogsum_student_with_bad_rows(tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    rows: list = _rows("dialogsum", 5)
    rows.append({"fname": "broken", "summary1": "A summary."})  # no dialogue: the task rejects the row
    rows.append(Example("no-refs", "Summarize the following dialogue.", "#Person1#: Hi.", "", []))
    result = evaluate_model(str(tiny_pair[1]), "dialogsum", rows, FAST, tmp_path / "out", label="student")

    assert result.metric == "rougeLsum" and result.num_scored == 5
    assert result.skipped == {"missing": 1, "no_reference": 1}
    assert {r["row"] for r in result.skipped_rows} == {"5", "no-refs"}
    # DialogSum validation rows carry three references each, all kept for max-over-references scoring.
    records = read_predictions(tmp_path / "out" / "predictions.jsonl")
    assert [r.id for r in records] == [row["fname"] for row in rows[:5]]
    assert all(len(r.references) == 3 for r in records)
    for rec, row in zip(records, rows, strict=False):
        assert rec.references == [row["summary1"], row["summary2"], row["summary3"]]
        assert rec.prompt.startswith("<|im_start|>user\nSummarize the following dialogue.")
        assert rec.prompt.endswith("<|im_start|>assistant\n")
        assert 1 <= rec.generated_tokens <= 8
        assert set(rec.scores) == {"rouge1", "rouge2", "rougeL", "rougeLsum"}
    mean = sum(r.scores["rougeLsum"] for r in records) / 5
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["metrics"]["rougeLsum"] == pytest.approx(mean)
    assert metrics["num_skipped"] == 2 and metrics["model"]["kind"] == "local"
    assert (tmp_path / "out" / "report.html").read_text().count("data:image/png;base64,") == 2
    again = load_result(tmp_path / "out" / "metrics.json", tmp_path / "out" / "predictions.jsonl")
    assert again.metrics == result.metrics and again.records == result.records


def test_empty_predictions_score_zero(tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_pair[1])
    tok = AutoTokenizer.from_pretrained(tiny_pair[1])
    # Every token of the vocabulary ends generation: each prediction is empty, and must score 0, not raise.
    model.generation_config.eos_token_id = list(range(model.config.vocab_size))
    result = evaluate_model((model, tok), "qed", _rows("qed", 3), FAST, None, label="mute")
    assert [r.prediction for r in result.records] == ["", "", ""]
    assert [r.generated_tokens for r in result.records] == [1, 1, 1]
    assert result.metrics == {"exact_match": 0.0, "f1": 0.0}


def test_qed_teacher_and_comparison_report(tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    rows = _rows("qed", 4)
    teacher = evaluate_model(str(tiny_pair[0]), "qed", rows, FAST, tmp_path / "t", label="teacher")
    student = evaluate_model(str(tiny_pair[1]), "qed", rows, FAST, tmp_path / "s", label="student")
    for result in (teacher, student):
        assert result.metric == "f1" and set(result.metrics) == {"exact_match", "f1"}
        for rec in result.records:
            assert rec.scores == score("f1", rec.prediction, rec.references)
    # The base-model teacher gets the plain template; the student its ChatML template.
    assert teacher.records[0].prompt.startswith("### Instruction:\nwhen does the implantation")
    assert teacher.records[0].prompt.endswith("### Response:\n")
    paths = compare_models([teacher, student], tmp_path / "cmp")
    html = paths["report"].read_text()
    assert "teacher" in html and "student" in html and html.count("data:image/png;base64,") == 2
    comparison = json.loads(paths["comparison"].read_text())
    assert set(comparison["models"]) == {"teacher", "student"} and comparison["metric"] == "f1"


def test_long_prompts_are_cut_to_max_prompt_tokens(tiny_pair: tuple[Path, Path]) -> None:
    config = EvalConfig(max_new_tokens=2, batch_size=2, max_prompt_tokens=64, progress=False)
    result = evaluate_model(str(tiny_pair[1]), "dialogsum", _rows("dialogsum", 2), config, None, label="s")
    assert all(r.truncated for r in result.records)
    assert result.generation["truncated_prompts"] == 2.0
    for rec, row in zip(result.records, _rows("dialogsum", 2), strict=True):
        assert rec.prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")
        # The prompt shows the context as the model saw it: a word-boundary prefix of the dialogue.
        seen = rec.prompt.split("\n\n", 1)[1].rsplit("<|im_end|>", 1)[0]
        assert row["dialogue"].startswith(seen) and len(seen) < len(row["dialogue"])


def test_nothing_scorable_is_an_error(tiny_pair: tuple[Path, Path]) -> None:
    rows = [Example("a", "Summarize.", "text", "", ["  "])]
    with pytest.raises(ValueError, match="no_reference"):
        evaluate_model(str(tiny_pair[1]), "dialogsum", rows, FAST, None, label="s")


def test_logs_metrics_and_artifacts_to_the_active_run(
    tiny_pair: tuple[Path, Path], tmp_path: Path, mlflow_store: str
) -> None:
    import mlflow

    with mlflow.start_run(experiment_id=mlflow_store) as run:
        result = evaluate_model(
            str(tiny_pair[1]), "qed", _rows("qed", 2), FAST, tmp_path / "o", label="distilled"
        )
        compare_models([result], tmp_path / "cmp")
    logged = mlflow.MlflowClient().get_run(run.info.run_id).data.metrics
    assert logged["eval/distilled/f1"] == pytest.approx(result.metrics["f1"])
    assert logged["eval/distilled/num_scored"] == 2.0
    assert logged["eval/distilled/generation/tokens_per_second"] > 0
    table = mlflow.MlflowClient().load_table(
        mlflow_store, "eval/distilled/predictions_table.json", run_ids=[run.info.run_id]
    )
    assert [str(i) for i in table["id"]] == [r.id for r in result.records]  # pandas reads ids as ints
    assert list(table["prediction"]) == [r.prediction for r in result.records]
    assert list(table["f1"]) == pytest.approx([r.scores["f1"] for r in result.records])
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "eval/distilled")}
    assert artifacts == {
        "eval/distilled/predictions.jsonl",
        "eval/distilled/metrics.json",
        "eval/distilled/report.html",
        "eval/distilled/predictions_table.json",
    }
    top = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "eval")}
    assert {"eval/report.html", "eval/comparison.json"} <= top


def test_registered_model_by_alias(tiny_pair: tuple[Path, Path], tmp_path: Path, mlflow_store: str) -> None:
    import mlflow
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_pair[1])
    tok = AutoTokenizer.from_pretrained(tiny_pair[1])
    with mlflow.start_run(experiment_id=mlflow_store):
        info = mlflow.transformers.log_model(
            {"model": model, "tokenizer": tok},
            name="student",
            task="text-generation",
            pip_requirements=["transformers", "torch"],
            registered_model_name="tiny-student",
        )
    client = mlflow.MlflowClient()
    client.set_registered_model_alias("tiny-student", "champion", info.registered_model_version)

    rows = _rows("dialogsum", 3)
    spec = ModelSpec(source="models:/tiny-student@champion", cache_dir=str(tmp_path / "cache"))
    by_alias = evaluate_model(spec, "dialogsum", rows, FAST, None, label="champion")
    direct = evaluate_model(str(tiny_pair[1]), "dialogsum", rows, FAST, None, label="direct")
    assert by_alias.model["registered_model"] == "tiny-student"
    assert by_alias.model["registered_version"] == str(info.registered_model_version)
    assert by_alias.model["source"] == "models:/tiny-student@champion"
    # Same weights and tokenizer (chat template included) from the registry: the same greedy outputs.
    assert [r.prediction for r in by_alias.records] == [r.prediction for r in direct.records]
    assert [r.prompt for r in by_alias.records] == [r.prompt for r in direct.records]
    # Resolved once, cached by version: a second resolve does not download again.
    cached = list((tmp_path / "cache" / "mlflow-registry").iterdir())
    again = evaluate_model(spec, "dialogsum", rows[:1], FAST, None, label="champion")
    assert list((tmp_path / "cache" / "mlflow-registry").iterdir()) == cached
    assert again.records[0].prediction == by_alias.records[0].prediction


def test_unknown_alias_names_the_registry_problem(tmp_path: Path, mlflow_store: str) -> None:
    from otdistill.models import ModelSourceError

    with pytest.raises(ModelSourceError, match="models:/nobody@champion"):
        evaluate_model("models:/nobody@champion", "qed", _rows("qed", 1), FAST, None, label="x")


def test_registry_uri_parsing_and_redaction() -> None:
    from otdistill.evaluation.registry import RegistryRef, parse_registry_uri, redact_uri
    from otdistill.models import ModelSourceError

    assert parse_registry_uri("models:/student@champion") == RegistryRef("student", alias="champion")
    assert parse_registry_uri("models:/student/7") == RegistryRef("student", version="7")
    with pytest.raises(ModelSourceError, match="models:/<name>@<alias>"):
        parse_registry_uri("models:/student")
    assert redact_uri("postgresql://mlflow:s3cret@db:5432/mlflow") == "postgresql://***@db:5432/mlflow"
    assert redact_uri("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
