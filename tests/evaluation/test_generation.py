"""Batched greedy generation on the tiny teacher (Gemma-like, BOS) and student (SmolLM2-like, ChatML)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from otdistill.evaluation.generation import (
    encode_prompt,
    greedy_generate,
    stop_token_ids,
    supports_continuous_batching,
)

PROMPTS = [
    "#Person1#: Hi, Mr. Smith. I'm Doctor Hawkins. Why are you here today?\n#Person2#: I found it would be a "
    "good idea to get a check-up.\nSummary:",
    "when does the implantation of the embryo occur",
    "Summary:",
    "#Person1#: Do you have any plans for the weekend? #Person2#: Not yet. Summary:",
    "who sang the song",
    # Longer than the tiny teacher's 64-token sliding window, so padding meets sliding attention too.
    "#Person1#: Ms. Dawson, I need you to take a dictation for me.\n#Person2#: Yes, sir...\n#Person1#: This "
    "should go out as an intra-office memorandum to all employees by this afternoon. Are you ready?\n"
    "#Person2#: Yes, sir. Go ahead.\n#Person1#: Attention all staff... Effective immediately, "
    "all office communications are restricted to email correspondence and official memos.\nSummary:",
]


def _load(path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def student(tiny_pair: tuple[Path, Path]) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    return _load(tiny_pair[1])


@pytest.fixture(scope="module")
def teacher(tiny_pair: tuple[Path, Path]) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    return _load(tiny_pair[0])


def _reference_greedy(model: PreTrainedModel, ids: list[int], steps: int) -> list[int]:
    """Greedy decoding the slow obvious way: full forward pass per step, argmax of the last logits."""
    seq = list(ids)
    with torch.no_grad():
        for _ in range(steps):
            logits = model(torch.tensor([seq])).logits
            seq.append(int(logits[0, -1].argmax()))
    return seq[len(ids) :]


@pytest.mark.parametrize("side", ["student", "teacher"])
def test_batched_equals_one_by_one(side: str, request: pytest.FixtureRequest) -> None:
    model, tok = request.getfixturevalue(side)
    one = greedy_generate(model, tok, PROMPTS, max_new_tokens=12, batch_size=1, show_progress=False)
    batched = greedy_generate(model, tok, PROMPTS, max_new_tokens=12, batch_size=3, show_progress=False)
    unsorted = greedy_generate(
        model, tok, PROMPTS, max_new_tokens=12, batch_size=5, sort_by_length=False, show_progress=False
    )
    assert batched.texts == one.texts == unsorted.texts
    assert batched.num_tokens == one.num_tokens == unsorted.num_tokens
    assert any(one.texts), "the tiny model generated nothing at all; the comparison would be vacuous"
    assert max(one.prompt_tokens) > 64 > min(one.prompt_tokens)


@pytest.mark.parametrize("side", ["student", "teacher"])
def test_matches_step_by_step_argmax_without_cache(side: str, request: pytest.FixtureRequest) -> None:
    model, tok = request.getfixturevalue(side)
    prompt = PROMPTS[0]
    ids = encode_prompt(tok, prompt)
    expected = _reference_greedy(model, ids, 6)
    stops = set(stop_token_ids(tok, model))
    if stops & set(expected):
        expected = expected[: next(i for i, t in enumerate(expected) if t in stops)]
    got = greedy_generate(
        model, tok, [prompt, PROMPTS[1]], max_new_tokens=6, batch_size=2, show_progress=False
    )
    assert got.texts[0] == tok.decode(expected, skip_special_tokens=True).strip()


def test_stops_at_stop_token_and_respects_max_new_tokens(
    student: tuple[PreTrainedModel, PreTrainedTokenizerBase],
) -> None:
    model, tok = student
    prompt = PROMPTS[3]
    free = _reference_greedy(model, encode_prompt(tok, prompt), 10)
    assert not set(free) & set(stop_token_ids(tok, model)), "pick a prompt whose greedy run has no stop token"
    # Declare the 4th generated token a stop token: generation must end right there (stop token counted,
    # not decoded), in a batch where the other rows keep going.
    stop = free[3]
    first = free.index(stop)
    out = greedy_generate(
        model,
        tok,
        [prompt, PROMPTS[0]],
        max_new_tokens=10,
        batch_size=2,
        extra_stop_ids=[stop],
        show_progress=False,
    )
    assert out.stopped[0] and out.num_tokens[0] == first + 1
    assert out.texts[0] == tok.decode(free[:first], skip_special_tokens=True).strip()
    plain = greedy_generate(model, tok, [prompt], max_new_tokens=10, batch_size=1, show_progress=False)
    assert plain.num_tokens == [10] and plain.stopped == [False]
    assert plain.texts[0] == tok.decode(free, skip_special_tokens=True).strip()
    short = greedy_generate(model, tok, [prompt], max_new_tokens=3, batch_size=1, show_progress=False)
    assert (
        short.num_tokens == [3] and short.texts[0] == tok.decode(free[:3], skip_special_tokens=True).strip()
    )


def test_continuous_batching_only_for_full_attention_caches(
    student: tuple[PreTrainedModel, PreTrainedTokenizerBase],
    teacher: tuple[PreTrainedModel, PreTrainedTokenizerBase],
) -> None:
    # The tiny student is Llama (full attention in every layer); the tiny teacher is Gemma 3, whose
    # sliding-window layers keep fixed batches through `generate`.
    assert supports_continuous_batching(student[0])
    assert not supports_continuous_batching(teacher[0])
    assert greedy_generate(*student, PROMPTS[:2], max_new_tokens=2, show_progress=False).continuous
    assert not greedy_generate(*teacher, PROMPTS[:2], max_new_tokens=2, show_progress=False).continuous
    fixed = greedy_generate(
        *student, PROMPTS, max_new_tokens=6, continuous_batching=False, show_progress=False
    )
    assert not fixed.continuous
    assert fixed.texts == greedy_generate(*student, PROMPTS, max_new_tokens=6, show_progress=False).texts


@pytest.fixture(scope="module")
def lively_student(
    student: tuple[PreTrainedModel, PreTrainedTokenizerBase],
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The tiny student's architecture re-initialised with larger weights: the saved tiny model repeats one
    token forever, this one produces varied sequences, so stop tokens end rows at different steps."""
    config = copy.deepcopy(student[0].config)
    config.initializer_range = 0.2
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval(), student[1]


@pytest.mark.parametrize("batch_size", [2, 3, 4])
def test_rows_leave_and_join_mid_batch(
    lively_student: tuple[PreTrainedModel, PreTrainedTokenizerBase], batch_size: int
) -> None:
    """Rows that stop early leave the batch and waiting prompts (longer or shorter than the batch's cache)
    join it: every row still generates exactly what it generates alone."""
    model, tok = lively_student
    prompts = PROMPTS * 2
    free = [_reference_greedy(model, encode_prompt(tok, p), 16) for p in PROMPTS]
    own = set(stop_token_ids(tok, model))

    def lengths(stops: set[int]) -> list[int]:
        return [next((n + 1 for n, t in enumerate(f) if t in stops | own), len(f)) for f in free]

    # Two extra stop tokens from the free-running outputs, chosen so rows stop at different steps.
    candidates = sorted({t for f in free for t in f} - own)
    stops = max(
        ({a, b} for a in candidates for b in candidates if a < b),
        key=lambda pair: (len(set(lengths(pair))), 16 in lengths(pair)),
    )
    assert len(set(lengths(stops))) >= 3 and 16 in lengths(stops), "the tiny model's outputs are too uniform"
    one = [
        greedy_generate(model, tok, [p], max_new_tokens=16, extra_stop_ids=stops, show_progress=False)
        for p in prompts
    ]
    for sort in (True, False):
        got = greedy_generate(
            model,
            tok,
            prompts,
            max_new_tokens=16,
            batch_size=batch_size,
            extra_stop_ids=stops,
            sort_by_length=sort,
            show_progress=False,
        )
        assert got.continuous
        assert got.texts == [g.texts[0] for g in one]
        assert got.num_tokens == [g.num_tokens[0] for g in one]
        assert got.stopped == [g.stopped[0] for g in one]
    assert [g.num_tokens[0] for g in one] == lengths(stops) * 2


@pytest.mark.parametrize("side", ["lively_student", "student"])
def test_shared_prompt_prefix_is_processed_once(side: str, request: pytest.FixtureRequest) -> None:
    """Prompts that share an instruction prefix (prefix caching) generate what each generates alone."""
    model, tok = request.getfixturevalue(side)
    prefix = "Summarize the following dialogue in one sentence, naming both speakers.\n\n"
    prompts = [prefix + p for p in PROMPTS]
    alone = [greedy_generate(model, tok, [p], max_new_tokens=10, show_progress=False) for p in prompts]
    assert all(g.shared_prefix_tokens == 0 for g in alone)
    got = greedy_generate(model, tok, prompts, max_new_tokens=10, batch_size=3, show_progress=False)
    common = len(encode_prompt(tok, prefix)) - 2  # the prefix's last tokens may merge with what follows
    assert got.continuous and got.shared_prefix_tokens >= common
    assert got.texts == [g.texts[0] for g in alone]
    assert got.num_tokens == [g.num_tokens[0] for g in alone]
    no_shared = greedy_generate(model, tok, PROMPTS, max_new_tokens=2, show_progress=False)
    assert no_shared.shared_prefix_tokens == 0


def test_stop_tokens_include_end_of_turn(
    student: tuple[PreTrainedModel, PreTrainedTokenizerBase],
    teacher: tuple[PreTrainedModel, PreTrainedTokenizerBase],
) -> None:
    s_model, s_tok = student
    t_model, t_tok = teacher
    s_ids = stop_token_ids(s_tok, s_model)
    assert s_tok.convert_tokens_to_ids("<|im_end|>") in s_ids
    assert s_tok.convert_tokens_to_ids("<|endoftext|>") in s_ids
    assert t_tok.convert_tokens_to_ids("<eos>") in stop_token_ids(t_tok, t_model)
    assert t_tok.convert_tokens_to_ids("<pad>") not in stop_token_ids(t_tok, t_model)


def test_bos_added_once(teacher: tuple[PreTrainedModel, PreTrainedTokenizerBase]) -> None:
    _, tok = teacher
    plain = encode_prompt(tok, "Summary:")
    templated = encode_prompt(tok, "<bos>Summary:")
    assert plain[0] == tok.bos_token_id and plain[1] != tok.bos_token_id
    # (The text after an in-text <bos> may tokenise differently: this Metaspace tokenizer prepends "▁" only to
    # the first word of a string; what matters is that BOS is there exactly once.)
    assert templated[0] == tok.bos_token_id and templated.count(tok.bos_token_id) == 1


def test_prompt_is_not_in_output(student: tuple[PreTrainedModel, PreTrainedTokenizerBase]) -> None:
    model, tok = student
    out = greedy_generate(model, tok, ["#Person1#: Hello there."], max_new_tokens=4, show_progress=False)
    assert "#Person1#: Hello there." not in out.texts[0]
    assert out.prompt_tokens == [len(encode_prompt(tok, "#Person1#: Hello there."))]
    assert out.tokens_per_second > 0
    assert 0 < out.prefill_seconds < out.seconds


def test_bad_arguments(student: tuple[PreTrainedModel, PreTrainedTokenizerBase]) -> None:
    model, tok = student
    with pytest.raises(ValueError, match="max_new_tokens"):
        greedy_generate(model, tok, ["a"], max_new_tokens=0)
    with pytest.raises(ValueError, match="batch_size"):
        greedy_generate(model, tok, ["a"], batch_size=0)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        greedy_generate(model, tok, ["a", ""], show_progress=False)
