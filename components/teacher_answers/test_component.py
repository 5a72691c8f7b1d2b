"""teacher_answers: the tiny teacher answers the gold snapshot's rows one-shot; the new snapshot's targets are
exactly what the teacher generates for them directly, its shot is shown to the teacher and trains nobody,
the gold stays in the rows, the teacher cache built from it has the teacher's prompt it answered in, and
the teacher is scored with that shot (a student zero-shot)."""

import json
from pathlib import Path

from kfp import dsl

from otdistill.components.conftest import Env, Upstream
from otdistill.data import load_examples, load_paired
from otdistill.evaluation.evaluate import generate_answers, load_model_ref
from otdistill.evaluation.metrics import score
from otdistill.models import load_tokenizer, resolve_model
from otdistill.steps.common import resolve_model_artifact, snapshot_data_config
from otdistill.steps.teacher_answers import (
    ANSWERS_FILE,
    answer_settings,
    answer_text,
    choose_shots,
    prompted_settings,
)
from otdistill.teacher_cache import TeacherCache


def test_teacher_answers_are_the_new_targets(env: Env, upstream: Upstream) -> None:
    from otdistill.components.cache_teacher.component import cache_teacher
    from otdistill.components.teacher_answers.component import teacher_answers

    # one shot of a whole dialogue needs more room than the other components' max_length
    cfg = env.cfg.with_overrides(
        {"targets.source": "teacher", "targets.few_shot": 1, "data.max_length": 1024}
    )
    data, report = env.artifact(dsl.Dataset, "answers"), env.artifact(dsl.Artifact, "answers-report")
    digest = teacher_answers.python_func(
        config=cfg.section_json("prepare_data"),
        settings=cfg.section_json("teacher_answers"),
        teacher_model=upstream.teacher,
        train_data=upstream.train,
        data=data,
        data_report=report,
        metrics=env.artifact(dsl.Metrics, "answers-metrics"),
    )

    # the same answers, generated directly
    gold = load_examples(snapshot_data_config(cfg, upstream.train.path, "train"), progress=False)
    (shot,) = [gold.examples[i] for i in choose_shots(len(gold.examples), 1, cfg.targets.seed)]
    rest = [ex for ex in gold.examples if ex.id != shot.id]
    settings = answer_settings(cfg)
    model, t_tok, _ = load_model_ref(resolve_model_artifact(upstream.teacher.path), settings)
    prepared, gen = generate_answers(model, t_tok, rest, settings, shots=[shot])
    expected = {ex.id: answer_text(text) for ex, text in zip(prepared.examples, gen.texts, strict=True)}
    answered = {k: v for k, v in expected.items() if v}
    assert answered, "the tiny teacher gave no usable answer"

    answers_cfg = snapshot_data_config(cfg, data.path, "train")
    loaded = load_examples(answers_cfg, progress=False)
    assert {ex.id: ex.response for ex in loaded.examples} == answered
    assert loaded.shots == [shot]  # with its gold answer, and no training row itself
    assert loaded.report.rows_skipped == len(expected) - len(answered)  # empty answers are counted
    gold_rows = {json.loads(line)["fname"]: json.loads(line) for line in _lines(upstream.train.path)}
    for line in _lines(data.path):
        row = json.loads(line)
        record = row.pop("_otdistill")
        assert row == gold_rows[row["fname"]]  # the gold fields, kept for the record
        expected_record = {"target": answered.get(row["fname"]), "target_source": "teacher"}
        assert record == ({"shot": True} if row["fname"] == shot.id else expected_record)
    assert digest == data.metadata["sha256"] == loaded.report.content_sha256 != upstream.data_hash
    assert data.metadata["gold_sha256"] == upstream.data_hash and data.metadata["few_shot"] == "1"
    table = (Path(report.path) / ANSWERS_FILE).read_text().splitlines()
    assert [json.loads(line)["answer"] for line in table] == [expected[ex.id] for ex in prepared.examples]

    # the cache is built on the answers, with the teacher's logits taken in the prompt it answered in
    cache = env.artifact(dsl.Dataset, "answers-cache")
    cache_teacher.python_func(
        config=cfg.section_json("cache_teacher"),
        teacher_model=upstream.teacher,
        train_data=data,
        teacher_cache=cache,
    )
    assert cache.metadata["examples"] == str(len(answered)) and cache.metadata["data_sha256"] == digest
    assert TeacherCache(cache.path).identity.data_sha256 == digest
    s_tok = load_tokenizer(resolve_model(cfg.student))
    paired = load_paired(answers_cfg, t_tok, s_tok, progress=False)
    generated_from = dict(zip((ex.id for ex in prepared.examples), prepared.ids, strict=True))
    for feature in paired.features:
        assert (
            feature.teacher.input_ids[: feature.teacher.response_start] == generated_from[feature.example_id]
        )
        assert s_tok.decode(feature.student.input_ids).count("<|im_start|>user") == 1  # zero-shot student

    # the teacher is scored as it answered (its shot, the same prompt budget), a student zero-shot
    from otdistill.components.evaluate_student.component import evaluate_student
    from otdistill.sweep.rows import teacher_item

    no_test = env.no_test_data("answers-no-test")
    records = {}
    for row in (teacher_item(cfg), {**teacher_item(cfg), "row": "sft-s0", "variant": "sft", "sft": True}):
        record = env.artifact(dsl.Artifact, f"answers-record-{row['row']}")
        evaluate_student.python_func(
            config=cfg.section_json("evaluate"),
            validation_data=upstream.validation,
            train_data=data,
            test_data=no_test,
            student_model=upstream.teacher,
            row=row,
            record=record,
            report=env.artifact(dsl.HTML, f"answers-report-{row['row']}"),
            metrics=env.artifact(dsl.Metrics, f"answers-metrics-{row['row']}"),
        )
        records[row["row"]] = json.loads(Path(record.path).read_text())["splits"]["validation"]
    scored, zero_shot = records["teacher"], records["sft-s0"]
    assert scored["shots"] == {"teacher": 1} and zero_shot["shots"] == {}
    val = load_examples(snapshot_data_config(cfg, upstream.validation.path, "validation"), progress=False)
    prompted = prompted_settings(cfg, cfg.eval.max_new_tokens)
    few, gen = generate_answers(model, t_tok, val.examples, prompted, shots=[shot])
    direct = {
        ex.id: score(val.task.metric, text, ex.references)[val.task.metric]
        for ex, text in zip(few.examples, gen.texts, strict=True)
    }
    assert {i: s[val.task.metric] for i, s in scored["row_scores"]["teacher"].items()} == direct


def _lines(snapshot: str) -> list[str]:
    return (Path(snapshot) / "train.jsonl").read_text(encoding="utf-8").splitlines()
