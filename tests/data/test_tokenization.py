"""One example, two tokenisers, on the tiny pair (Gemma-like teacher: Unigram + <bos>, no chat template;
SmolLM2-like student: byte-level BPE, no BOS, ChatML) and real DialogSum/QED rows."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from otdistill.data import (
    DataConfig,
    DataValidationError,
    Example,
    PairEncoder,
    RowValidationError,
    SideEncoder,
    build_prompt,
    end_of_response_id,
    load_examples,
    load_paired,
    special_prefix_ids,
)

GEMMA_LIKE_CHAT = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>"
    "{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] }}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


@pytest.fixture(scope="module")
def dialogsum_examples(shared_data: Path) -> list[Example]:
    cfg = DataConfig(task="dialogsum", source=str(shared_data / "dialogsum"), split="validation", limit=12)
    return load_examples(cfg, progress=False).examples


@pytest.fixture(scope="module")
def qed_examples(shared_data: Path) -> list[Example]:
    cfg = DataConfig(task="qed", source=str(shared_data / "qed"), split="validation", limit=12)
    return load_examples(cfg, progress=False).examples


def test_plain_and_chat_prompts_end_where_the_response_starts(
    tiny_tokenizers: tuple[Any, Any], dialogsum_examples: list[Example]
) -> None:
    teacher, student = tiny_tokenizers
    ex = dialogsum_examples[0]
    plain = build_prompt(ex, teacher)
    assert plain.startswith(
        "### Instruction:\nSummarize the following dialogue.\n\n### Input:\n" + ex.context
    )
    assert plain.endswith("### Response:\n")
    chat = build_prompt(ex, student)
    full = student.apply_chat_template(
        [
            {"role": "user", "content": f"{ex.instruction}\n\n{ex.context}"},
            {"role": "assistant", "content": ex.response},
        ],
        tokenize=False,
    )
    assert full.startswith(chat + ex.response)
    assert chat.endswith("<|im_start|>assistant\n")


def test_special_tokens_are_probed_per_tokenizer(tiny_tokenizers: tuple[Any, Any]) -> None:
    teacher, student = tiny_tokenizers
    assert special_prefix_ids(teacher) == [teacher.bos_token_id]
    assert special_prefix_ids(student) == []
    assert end_of_response_id(teacher) == teacher.convert_tokens_to_ids("<eos>")
    assert end_of_response_id(student) == student.convert_tokens_to_ids("<|im_end|>")


def check_side(feature: Any, tokenizer: Any, encoder: SideEncoder, ex: Example) -> None:
    """The invariants every side of every feature must hold."""
    ids, start = feature.input_ids, feature.response_start
    assert ids[start:] == tokenizer(ex.response, add_special_tokens=False)["input_ids"] + [encoder.end_id]
    assert tokenizer.decode(ids[start:-1]) == ex.response  # exactly the response text, then the end token
    assert ids[-1] == encoder.end_id
    assert feature.response_positions == list(range(start - 1, len(ids) - 1))
    assert [ids[p + 1] for p in feature.response_positions] == ids[start:]


def test_pair_features_on_real_rows(
    tiny_tokenizers: tuple[Any, Any], dialogsum_examples: list[Example], qed_examples: list[Example]
) -> None:
    teacher, student = tiny_tokenizers
    enc = PairEncoder(teacher, student, max_length=4096)
    for ex in dialogsum_examples + qed_examples:
        f = enc.encode(ex)
        assert not f.truncated and f.context_chars == len(ex.context) and f.example_id == ex.id
        check_side(f.teacher, teacher, enc.teacher, ex)
        check_side(f.student, student, enc.student, ex)
        # BOS: exactly one for the Gemma-like teacher, first; none added for the student
        t_ids = f.teacher.input_ids
        assert t_ids[0] == teacher.bos_token_id and t_ids.count(teacher.bos_token_id) == 1
        s_prompt = student(build_prompt(ex, student), add_special_tokens=False)["input_ids"]
        assert f.student.input_ids[: f.student.response_start] == s_prompt
        assert student.decode(f.student.input_ids).startswith("<|im_start|>user\n")


def test_leading_space_boundary_effect_is_only_in_tokens(
    tiny_tokenizers: tuple[Any, Any], dialogsum_examples: list[Example]
) -> None:
    """SentencePiece-style Metaspace marks the response's first word with '▁'; byte-level BPE does not. Both
    decode back to the same response text, which is what makes the two sides comparable."""
    teacher, student = tiny_tokenizers
    f = PairEncoder(teacher, student).encode(dialogsum_examples[0])
    t_first = teacher.convert_ids_to_tokens(f.teacher.response_ids[0])
    s_first = student.convert_ids_to_tokens(f.student.response_ids[0])
    assert t_first.startswith("\u2581") and not s_first.startswith("\u0120")
    assert teacher.decode(f.teacher.response_ids[:-1]) == student.decode(f.student.response_ids[:-1])


def test_chat_template_with_bos_text_gets_one_bos_and_its_end_of_turn(
    tiny_tokenizers: tuple[Any, Any], dialogsum_examples: list[Example]
) -> None:
    """A Gemma-style instruct template renders '<bos>' itself; the tokenizer must not add a second one."""
    gemma_it = copy.deepcopy(tiny_tokenizers[0])
    gemma_it.add_special_tokens({"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]})
    gemma_it.chat_template = GEMMA_LIKE_CHAT
    enc = SideEncoder(gemma_it, "teacher-it")
    assert enc.end_id == gemma_it.convert_tokens_to_ids("<end_of_turn>") != gemma_it.eos_token_id
    ex = dialogsum_examples[1]
    prompt = enc.prompt_ids(ex)
    assert build_prompt(ex, gemma_it).startswith("<bos><start_of_turn>user\n")
    assert prompt[0] == gemma_it.bos_token_id and prompt.count(gemma_it.bos_token_id) == 1
    assert gemma_it.decode(prompt).endswith("<start_of_turn>model\n")
    assert (
        gemma_it(build_prompt(ex, gemma_it))["input_ids"][:2] == [gemma_it.bos_token_id] * 2
    )  # what we avoid


def test_truncation_cuts_the_same_context_for_both_and_never_the_response(
    tiny_tokenizers: tuple[Any, Any], dialogsum_examples: list[Example]
) -> None:
    teacher, student = tiny_tokenizers
    enc = PairEncoder(teacher, student, max_length=256)
    truncated = 0
    for ex in dialogsum_examples:
        f = enc.encode(ex)
        for side, tok, side_enc in ((f.teacher, teacher, enc.teacher), (f.student, student, enc.student)):
            assert len(side.input_ids) <= 256
            check_side(side, tok, side_enc, ex)
        if f.truncated:
            truncated += 1
            cut = ex.with_context(ex.context[: f.context_chars])
            assert 0 < f.context_chars < len(ex.context)
            assert not ex.context[f.context_chars].isalnum() or not ex.context[f.context_chars - 1].isalnum()
            assert f.teacher.input_ids[: f.teacher.response_start] == enc.teacher.prompt_ids(cut)
            assert f.student.input_ids[: f.student.response_start] == enc.student.prompt_ids(cut)
            # the cut is the longest word-boundary cut that fits: one more word would not
            longer = ex.context.find(" ", f.context_chars + 1)
            if longer != -1:
                more = ex.with_context(ex.context[:longer])
                sizes = [
                    len(e.prompt_ids(more)) + len(e.response_ids(ex.response))
                    for e in (enc.teacher, enc.student)
                ]
                assert max(sizes) > 256
    assert truncated >= 10  # the tiny tokenizers need 320-1150 tokens for these rows


def test_max_prompt_tokens_caps_both_prompts(
    tiny_tokenizers: tuple[Any, Any], qed_examples: list[Example]
) -> None:
    teacher, student = tiny_tokenizers
    enc = PairEncoder(teacher, student, max_length=4096, max_prompt_tokens=60)
    for ex in qed_examples:
        f = enc.encode(ex)
        assert f.teacher.response_start <= 60 and f.student.response_start <= 60
        assert teacher.decode(f.teacher.response_ids[:-1]) == ex.response


def test_rows_that_cannot_fit_are_reported_with_their_field(
    tiny_tokenizers: tuple[Any, Any], dialogsum_examples: list[Example], shared_data: Path
) -> None:
    teacher, student = tiny_tokenizers
    ex = dialogsum_examples[0]
    with pytest.raises(RowValidationError) as err:
        PairEncoder(teacher, student, max_length=12).encode(ex, 4, response_field="summary")
    assert (err.value.issue.index, err.value.issue.field, err.value.issue.reason) == (
        4,
        "summary",
        "too_long",
    )
    n_resp = len(SideEncoder(student).response_ids(ex.response))
    with pytest.raises(RowValidationError, match="even with the context removed") as err:
        PairEncoder(teacher, student, max_length=n_resp + 5).encode(ex, 2, context_field="dialogue")
    assert err.value.issue.field == "dialogue"

    base = dict(task="dialogsum", source=str(shared_data / "dialogsum"), split="validation", limit=12)
    skip = load_paired(DataConfig(**base, max_length=120, on_error="skip"), teacher, student, progress=False)
    r = skip.report
    # rows 0 and 1 need 125 and 122 student tokens without any dialogue; row 5's summary alone is 153
    assert r.skipped_by_reason == {"too_long": 3}
    assert [(i["index"], i["field"]) for i in r.issues] == [
        (0, "dialogue"),
        (1, "dialogue"),
        (5, "summary|summary1"),
    ]
    assert r.rows_kept == len(skip.features) == len(skip.examples) == 9
    assert 5 not in skip.source_indices
    assert r.truncated == sum(f.truncated for f in skip.features) > 0
    full = load_paired(DataConfig(**base, max_length=4096), teacher, student, progress=False).report
    assert full.truncated == 0 and full.content_sha256 != r.content_sha256
    with pytest.raises(DataValidationError, match="too_long"):
        load_paired(DataConfig(**base, max_length=120), teacher, student, progress=False)


def test_estimated_cut_equals_the_full_search(
    tiny_tokenizers: tuple[Any, Any], dialogsum_examples: list[Example], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The offset-based estimate is only a shortcut: without it (a tokenizer with no offsets) the plain
    binary search over every word boundary must find the very same cut."""
    teacher, student = tiny_tokenizers
    enc = PairEncoder(teacher, student, max_length=256)
    estimated = [enc.encode(ex) for ex in dialogsum_examples]
    monkeypatch.setattr(SideEncoder, "context_cut_bounds", lambda self, example, n_drop, margin=3: None)
    searched = [enc.encode(ex) for ex in dialogsum_examples]
    assert [f.context_chars for f in estimated] == [f.context_chars for f in searched]
    assert [f.teacher.input_ids for f in estimated] == [f.teacher.input_ids for f in searched]
    assert sum(f.truncated for f in searched) >= 10


def test_context_without_word_boundaries_is_cut_by_character(tiny_tokenizers: tuple[Any, Any]) -> None:
    teacher, student = tiny_tokenizers
    ex = Example("cjk", "Summarize the following dialogue.", "a" * 3000, "short answer", ["short answer"])
    f = PairEncoder(teacher, student, max_length=120).encode(ex)
    assert f.truncated and 0 < f.context_chars < 3000
    longer = ex.with_context("a" * (f.context_chars + 1))
    enc = PairEncoder(teacher, student, max_length=120)
    assert (
        max(len(e.prompt_ids(longer)) + len(e.response_ids(ex.response)) for e in (enc.teacher, enc.student))
        > 120
    )


def test_prompts_without_instruction_or_context(tiny_tokenizers: tuple[Any, Any]) -> None:
    teacher, student = tiny_tokenizers
    no_context = Example("a", "Name a colour.", "", "Red", ["Red"])
    assert build_prompt(no_context, teacher) == "### Instruction:\nName a colour.\n\n### Response:\n"
    assert "<|im_start|>user\nName a colour.<|im_end|>" in build_prompt(no_context, student)
    no_instruction = Example("b", "", "Once upon a time", "there was a fox.", ["there was a fox."])
    assert build_prompt(no_instruction, teacher) == "### Input:\nOnce upon a time\n\n### Response:\n"
    assert "<|im_start|>user\nOnce upon a time<|im_end|>" in build_prompt(no_instruction, student)
