"""The authors' recipe on the data side: the few-shot teacher prompt (plain and chat), the teacher's view of
a paired example, and a snapshot whose rows carry the teacher's answers and shots (`otdistill.data.targets`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from otdistill.data import (
    DataConfig,
    DataValidationError,
    Example,
    PairEncoder,
    SideEncoder,
    build_prompt,
    content_hash,
    load_examples,
    load_paired,
)
from otdistill.data.targets import RECORD_FIELD, shot_record, target_record
from otdistill.steps.teacher_answers import answer_text, choose_shots

SHOTS = [
    Example(
        "s1", "Summarize the dialogue.", "#Person1#: Hi.\n#Person2#: Hello.", "They greet.", ["They greet."]
    ),
    Example("s2", "Summarize the dialogue.", "#Person1#: Tea?\n#Person2#: Yes.", "Tea is accepted.", []),
]
QUERY = Example("q", "Summarize the dialogue.", "#Person1#: Lunch now?\n#Person2#: Later.", "gold", ["gold"])


def test_plain_few_shot_prompt_shows_each_solved_shot_then_the_zero_shot_prompt(
    tiny_tokenizers: tuple[Any, Any],
) -> None:
    teacher_tok, _ = tiny_tokenizers  # a base model: the plain template
    zero = build_prompt(QUERY, teacher_tok)
    few = build_prompt(QUERY, teacher_tok, SHOTS)
    first, second = (build_prompt(s, teacher_tok) + s.response + "\n\n" for s in SHOTS)
    assert few == first + second + zero
    assert few.endswith("### Response:\n") and QUERY.response not in few


def test_chat_few_shot_prompt_puts_the_shots_in_earlier_turns(tiny_tokenizers: tuple[Any, Any]) -> None:
    _, chat_tok = tiny_tokenizers  # ChatML
    few = build_prompt(QUERY, chat_tok, SHOTS)
    assert few.count("<|im_start|>user\n") == 3 and few.count("<|im_start|>assistant\n") == 3
    assert "<|im_start|>assistant\nThey greet.<|im_end|>" in few
    assert few.endswith(build_prompt(QUERY, chat_tok)[-60:]) and few.endswith("<|im_start|>assistant\n")
    assert few.index("Tea?") < few.index("Lunch now?")


def test_the_teacher_sees_the_shots_and_the_student_does_not(tiny_tokenizers: tuple[Any, Any]) -> None:
    teacher_tok, student_tok = tiny_tokenizers
    zero = PairEncoder(teacher_tok, student_tok, max_length=512).encode(QUERY)
    few = PairEncoder(teacher_tok, student_tok, max_length=512, teacher_shots=SHOTS).encode(QUERY)
    assert few.student == zero.student
    assert few.teacher.response_ids == zero.teacher.response_ids
    assert few.teacher.input_ids[: few.teacher.response_start] == SideEncoder(
        teacher_tok, "teacher", SHOTS
    ).prompt_ids(QUERY)
    assert few.teacher.response_start > zero.teacher.response_start
    prompt = teacher_tok.decode(few.teacher.input_ids[: few.teacher.response_start])
    assert "They greet." in prompt and prompt.count("<bos>") == 1  # BOS once, before the first shot


def test_a_long_context_is_cut_for_both_models_to_fit_the_few_shot_teacher(
    tiny_tokenizers: tuple[Any, Any],
) -> None:
    teacher_tok, student_tok = tiny_tokenizers
    long = Example("l", "Summarize.", " ".join(["#Person1#: We should meet on Monday."] * 40), "A plan.", [])
    teacher = SideEncoder(teacher_tok, "teacher", SHOTS)
    room = len(teacher.prompt_ids(long.with_context(""))) + len(teacher.response_ids(long.response)) + 40
    encoder = PairEncoder(teacher_tok, student_tok, max_length=room, teacher_shots=SHOTS)
    feature = encoder.encode(long)
    assert feature.truncated and feature.context_chars > 0 and len(feature.teacher.input_ids) <= room
    cut = long.with_context(long.context[: feature.context_chars])
    assert feature.student == PairEncoder(teacher_tok, student_tok, max_length=10_000).encode(cut).student
    assert feature.teacher.input_ids[: feature.teacher.response_start] == encoder.teacher.prompt_ids(cut)


def test_shots_are_a_fixed_draw_per_seed_and_leave_rows_to_answer() -> None:
    assert choose_shots(40, 3, seed=0) == choose_shots(40, 3, seed=0)
    assert {tuple(choose_shots(40, 3, seed=s)) for s in range(5)} != {tuple(choose_shots(40, 3, seed=0))}
    assert choose_shots(40, 0, seed=0) == []
    assert all(0 <= i < 40 for i in choose_shots(40, 3, seed=1))
    with pytest.raises(ValueError, match=r"targets.few_shot \(4\) leaves no training row"):
        choose_shots(4, 4, seed=0)


def test_an_answer_is_its_first_line() -> None:
    assert answer_text("  Bob buys tea.\n\n### Instruction:\nmore") == "Bob buys tea."
    assert answer_text("\n\n") == ""


def _snapshot(tmp_path: Path, shared_data: Path, records: dict[int, dict[str, Any]]) -> DataConfig:
    rows = (shared_data / "dialogsum" / "train.jsonl").read_text(encoding="utf-8").splitlines()[:5]
    out = tmp_path / "snap"
    out.mkdir(parents=True)
    lines = []
    for i, line in enumerate(rows):
        row = json.loads(line)
        if i in records:
            row[RECORD_FIELD] = records[i]
        lines.append(json.dumps(row))
    (out / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return DataConfig(task="dialogsum", source=str(out), split="train", max_length=512)


def test_a_teacher_answers_snapshot_loads_its_targets_and_its_shots(
    tmp_path: Path, shared_data: Path, tiny_tokenizers: tuple[Any, Any]
) -> None:
    gold = load_examples(_snapshot(tmp_path / "gold", shared_data, {}), progress=False)
    records = {1: shot_record(), 0: target_record("Answer zero."), 2: target_record("Answer two.", 10)}
    records.update({i: target_record(f"Answer {i}.") for i in (3, 4)})
    cfg = _snapshot(tmp_path / "answers", shared_data, records)
    loaded = load_examples(cfg, progress=False)
    assert [e.id for e in loaded.shots] == [gold.examples[1].id] and loaded.shot_indices == [1]
    assert loaded.shots[0].response == gold.examples[1].response  # a shot shows its gold answer
    assert loaded.source_indices == [0, 2, 3, 4]
    by_id = {e.id: e for e in loaded.examples}
    assert by_id[gold.examples[0].id].response == "Answer zero."
    assert by_id[gold.examples[0].id].references == gold.examples[0].references  # gold kept for the record
    assert by_id[gold.examples[2].id].context == gold.examples[2].context[:10]
    examples = [by_id[gold.examples[i].id] for i in (0, 2, 3, 4)]
    assert loaded.report.content_sha256 == content_hash("dialogsum", examples, loaded.shots)
    assert loaded.report.content_sha256 != content_hash("dialogsum", examples)  # the shots count
    assert content_hash("dialogsum", gold.examples, []) == gold.report.content_sha256
    paired = load_paired(cfg, *tiny_tokenizers, progress=False)
    teacher_tok, _ = tiny_tokenizers
    shown = teacher_tok.decode(paired.features[0].teacher.input_ids)
    assert gold.examples[1].response in shown and shown.count("### Response:") == 2
    assert paired.report.content_sha256 == loaded.report.content_sha256 and paired.shot_indices == [1]


def test_a_malformed_record_names_its_row_and_field(tmp_path: Path, shared_data: Path) -> None:
    cfg = _snapshot(tmp_path, shared_data, {3: {"target": "  "}})
    with pytest.raises(DataValidationError, match=r"row 3, field '_otdistill.target'.*\[empty\]"):
        load_examples(cfg, progress=False)
