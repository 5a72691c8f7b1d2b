"""Tasks: the built-in three on the real shared files, validation messages, and adding a task."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from otdistill.data import (
    DataConfig,
    Example,
    FieldTask,
    RowValidationError,
    Task,
    get_task,
    list_tasks,
    load_examples,
    register_task,
    register_tasks_from_yaml,
)


def read_rows(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


@pytest.mark.parametrize(
    ("task", "metric", "n_validation"),
    [("dialogsum", "rougeLsum", 200), ("fairytaleqa", "rougeL", 1025), ("qed", "f1", 150)],
)
def test_every_validation_row_loads(shared_data: Path, task: str, metric: str, n_validation: int) -> None:
    split = load_examples(
        DataConfig(task=task, source=str(shared_data / task), split="validation"), progress=False
    )
    report = split.report
    assert get_task(task).metric == metric
    assert report.rows_read == n_validation
    assert report.rows_kept + report.rows_skipped == report.rows_read
    assert report.rows_skipped == 0, report.issues
    assert len({ex.id for ex in split.examples}) == len(split.examples)
    for ex in split.examples:
        assert ex.instruction.strip() and ex.context.strip() and ex.response.strip()
        assert ex.response in ex.references


def test_dialogsum_rows(shared_data: Path) -> None:
    task = get_task("dialogsum")
    train_row = read_rows(shared_data / "dialogsum" / "train.jsonl")[0]
    ex = task.to_example(train_row, 0)
    assert ex.id == train_row["fname"]
    assert ex.instruction == "Summarize the following dialogue."
    assert ex.context == train_row["dialogue"] and ex.response == train_row["summary"]
    assert ex.references == [train_row["summary"]]
    val_row = read_rows(shared_data / "dialogsum" / "validation.jsonl")[3]
    ex = task.to_example(val_row, 3)
    assert ex.response == val_row["summary1"]
    assert ex.references == list(dict.fromkeys(val_row[f"summary{i}"] for i in (1, 2, 3)))
    assert len(ex.references) == 3


def test_fairytaleqa_references_skip_empty_second_answer(shared_data: Path) -> None:
    task = get_task("fairytaleqa")
    rows = read_rows(shared_data / "fairytaleqa" / "train.jsonl")
    one = next(i for i, r in enumerate(rows) if not r["answer2"])
    ex = task.to_example(rows[one], one)
    assert (ex.instruction, ex.context) == (rows[one]["question"], rows[one]["story_section"])
    assert ex.references == [rows[one]["answer1"]] and ex.id == str(one)
    two = next(i for i, r in enumerate(rows) if r["answer2"] and r["answer2"] != r["answer1"])
    assert task.to_example(rows[two], two).references == [rows[two]["answer1"], rows[two]["answer2"]]


def test_qed_first_non_empty_answer_and_distinct_references(shared_data: Path) -> None:
    task = get_task("qed")
    row = read_rows(shared_data / "qed" / "validation.jsonl")[0]
    row["original_nq_answers"] = [
        [{"start": 0, "end": 0, "string": ""}],
        [{"start": 70, "end": 99, "string": "around 9 days"}, {"start": 1, "end": 2, "string": "9 days"}],
        [{"start": 70, "end": 99, "string": "around 9 days"}],
    ]
    ex = task.to_example(row, 7)
    assert ex.response == "around 9 days"
    assert ex.references == ["around 9 days", "9 days"]
    assert ex.id == str(row["example_id"])
    assert (ex.instruction, ex.context) == (row["question_text"], row["paragraph_text"])


@pytest.mark.parametrize(
    ("answers", "field", "reason"),
    [
        ([], "original_nq_answers", "empty"),
        ([[{"start": 0, "end": 0, "string": "  "}]], "original_nq_answers", "empty"),
        ("Bart Millard", "original_nq_answers", "wrong_type"),
        ([{"string": "x"}], "original_nq_answers[0]", "wrong_type"),
        (
            [[{"start": 0, "end": 1, "string": "ok"}, {"start": 0}]],
            "original_nq_answers[0][1].string",
            "wrong_type",
        ),
    ],
)
def test_qed_bad_answers_are_reported_not_crashes(
    shared_data: Path, answers: Any, field: str, reason: str
) -> None:
    row = read_rows(shared_data / "qed" / "validation.jsonl")[0]
    row["original_nq_answers"] = answers
    with pytest.raises(RowValidationError) as err:
        get_task("qed").to_example(row, 12)
    assert (err.value.issue.index, err.value.issue.field, err.value.issue.reason) == (12, field, reason)
    assert "row 12" in str(err.value) and field in str(err.value)


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"dialogue": None}, "dialogue", "missing"),
        ({"summary": "   "}, "summary", "empty"),
        ({"dialogue": ["#Person1#: hi"]}, "dialogue", "wrong_type"),
        ({"fname": None}, "fname|id", "missing"),
    ],
)
def test_dialogsum_validation_names_index_and_field(
    shared_data: Path, change: dict[str, Any], field: str, reason: str
) -> None:
    row = read_rows(shared_data / "dialogsum" / "train.jsonl")[5]
    row.update(change)
    row = {k: v for k, v in row.items() if v is not None}
    with pytest.raises(RowValidationError) as err:
        get_task("dialogsum").to_example(row, 5)
    assert err.value.issue.index == 5
    assert err.value.issue.field == field
    assert err.value.issue.reason == reason


def test_dialogsum_takes_the_hub_copys_id_field(shared_data: Path) -> None:
    row = read_rows(shared_data / "dialogsum" / "train.jsonl")[0]
    hub_row = {"id": "train_0", **{k: v for k, v in row.items() if k != "fname"}}
    assert get_task("dialogsum").to_example(hub_row, 0).id == "train_0"


def test_dialogsum_row_without_any_summary_is_missing_response() -> None:
    with pytest.raises(RowValidationError, match=r"row 3, field 'summary\|summary1'"):
        get_task("dialogsum").to_example({"fname": "a", "dialogue": "#Person1#: hi"}, 3)


def test_add_a_task_with_a_dict_entry(tmp_path: Path) -> None:
    task = register_task(
        {
            "name": "trivia-dict",
            "metric": "f1",
            "instruction": "Answer the question: {question}",
            "context_field": "passage",
            "response_fields": "answer",
            "reference_fields": ["answer", "alias"],
            "id_field": "qid",
        }
    )
    assert get_task("trivia-dict") is task and "trivia-dict" in list_tasks()
    ex = task.to_example(
        {"qid": 9, "question": "Capital?", "passage": "Paris is...", "answer": "Paris", "alias": ""}, 0
    )
    assert ex == Example("9", "Answer the question: Capital?", "Paris is...", "Paris", ["Paris"])
    with pytest.raises(RowValidationError, match="field 'question'"):
        task.to_example({"qid": 1, "passage": "p", "answer": "a"}, 4)


def test_add_a_task_from_yaml_and_through_data_config(tmp_path: Path) -> None:
    spec = tmp_path / "tasks.yaml"
    spec.write_text(
        "tasks:\n"
        "  - name: headline-yaml\n"
        "    metric: rougeL\n"
        "    instruction: Write a headline for the article.\n"
        "    context_field: body\n"
        "    response_fields: [title]\n"
    )
    (task,) = register_tasks_from_yaml(spec)
    assert task.to_example({"body": "text", "title": "T"}, 2) == Example(
        "2", "Write a headline for the article.", "text", "T", ["T"]
    )
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"story": "once", "q": "who?", "a": "a fox"}) + "\n")
    cfg = DataConfig(
        task="fable-config",
        source=str(data),
        task_spec={
            "metric": "rougeL",
            "instruction": "{q}",
            "context_field": "story",
            "response_fields": ["a"],
        },
    )
    (ex,) = load_examples(cfg, progress=False).examples
    assert (ex.instruction, ex.context, ex.response) == ("who?", "once", "a fox")


def test_add_a_task_with_a_class() -> None:
    class ReverseTask(Task):
        name = "reverse-class"
        metric = "rougeL"

        def to_example(self, row: Any, index: int) -> Example:
            from otdistill.data.tasks import text_field

            text = text_field(row, index, "text")
            return Example(self.example_id(row, index), "Reverse the text.", text, text[::-1], [text[::-1]])

    register_task(ReverseTask)
    assert get_task("reverse-class").to_example({"text": "abc"}, 0).response == "cba"


def test_task_registration_errors() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_task({"name": "dialogsum", "metric": "f1", "instruction": "x", "response_fields": ["y"]})
    with pytest.raises(ValueError, match=r"unknown keys \['respons_field'\]"):
        register_task({"name": "typo", "metric": "f1", "instruction": "x", "respons_field": "y"})
    with pytest.raises(ValueError, match="metric 'bleu'"):
        FieldTask(name="m", metric="bleu", instruction="x", response_fields=["y"])
    with pytest.raises(KeyError, match="registered tasks: .*dialogsum"):
        get_task("no-such-task")
