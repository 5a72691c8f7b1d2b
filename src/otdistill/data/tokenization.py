"""One example, two tokenisers: the token ids each model sees, with the response marked.

For each model: ``ids = prompt_ids + response_ids + [end_id]`` where

* ``prompt_ids`` = the tokenizer's own special prefix (Gemma: one ``<bos>``; SmolLM2: nothing) followed by
  ``tokenizer(build_prompt(example, tokenizer), add_special_tokens=False)``. A chat template that already
  renders the BOS text is not given a second one. Suffix specials a post-processor might add (an EOS after
  the prompt) are never used: the prompt must end where the response starts.
* ``response_ids`` = ``tokenizer(response, add_special_tokens=False)``: the response is tokenised on its own,
  so it is the same text for both models whatever their prompts are. Boundary effect: a SentencePiece
  tokenizer that adds a dummy prefix (Metaspace, ``prepend_scheme="first"``) tokenises "Bart" as "▁Bart",
  i.e. the model sees one leading space after the prompt's final newline; a byte-level BPE tokenizer adds
  nothing. Decoding the response ids gives back exactly the response text in both cases (checked in tests).
* ``end_id`` closes the response: the chat template's end-of-turn token when there is a template (found by
  rendering an assistant turn, e.g. ``<|im_end|>``, Gemma's ``<end_of_turn>``), else the tokenizer's EOS.

Truncation never touches the response: when prompt + response is longer than ``max_length`` (or the prompt
than ``max_prompt_tokens``) the context is cut at a word boundary, the same cut for both models (the longest
that fits both), so teacher and student condition on the same text. The cut is estimated from the token
offsets of the over-long prompt and then verified by re-encoding a few candidate cuts (a binary search over
all word boundaries is the fallback); tests check both routes give the same cut. A row that does not fit
even with an empty context raises `RowValidationError` (reason ``too_long``).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from otdistill.data.errors import RowValidationError
from otdistill.data.examples import Example
from otdistill.data.prompts import build_prompt, has_chat_template

_SENTINEL = "OTDISTILL_RESPONSE_SENTINEL"


@dataclass(frozen=True)
class SideFeature:
    """One model's tokens for one example: `input_ids[response_start:]` are the response tokens (with end)."""

    input_ids: list[int]
    response_start: int

    @property
    def n_response(self) -> int:
        return len(self.input_ids) - self.response_start

    @property
    def response_ids(self) -> list[int]:
        return self.input_ids[self.response_start :]

    @property
    def response_positions(self) -> list[int]:
        """Index of the logit that predicts response token i: the position just before it."""
        return list(range(self.response_start - 1, len(self.input_ids) - 1))


@dataclass(frozen=True)
class PairedFeature:
    """The teacher's and the student's tokens for the same example.

    `truncated` says whether the context was cut; `context_chars` is how many of its characters both
    models saw.
    """

    example_id: str
    teacher: SideFeature
    student: SideFeature
    truncated: bool = False
    context_chars: int = 0


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def special_prefix_ids(tokenizer: Any) -> list[int]:
    """The ids the tokenizer puts before a text when asked for special tokens (e.g. ``[bos]``, or nothing)."""
    probe = "Hello world"
    plain = _ids(tokenizer, probe)
    full = list(tokenizer(probe, add_special_tokens=True)["input_ids"])
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start]
    raise ValueError(
        f"cannot find the text inside the tokenizer's special-token output {full} (text ids {plain})"
    )


def end_of_response_id(tokenizer: Any) -> int:
    """The token that ends a response: the chat template's end-of-turn token if it has one, else EOS."""
    if has_chat_template(tokenizer):
        try:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _SENTINEL}],
                tokenize=False,
                add_generation_prompt=False,
            )
        except Exception:  # a template that cannot render an assistant turn: fall back to EOS below
            text = ""
        if isinstance(text, str) and _SENTINEL in text:
            tail = _ids(tokenizer, text.split(_SENTINEL, 1)[1])
            special = set(getattr(tokenizer, "all_special_ids", []) or [])
            added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
            special |= {i for i, tok in added.items() if getattr(tok, "special", False)}
            if tail and tail[0] in special:
                return int(tail[0])
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ValueError("tokenizer has neither a chat end-of-turn token nor an eos_token_id: set eos_token")
    return int(eos)


class SideEncoder:
    """Encodes examples for one model; probes the tokenizer's BOS and end-of-turn conventions once.

    `shots`: solved examples this model's prompts show first (a few-shot teacher, `build_prompt`); the
    context cut applies to the example's own context only.
    """

    def __init__(self, tokenizer: Any, name: str = "model", shots: Sequence[Example] = ()) -> None:
        self.tokenizer = tokenizer
        self.name = name
        self.shots = tuple(shots)
        self.prefix_ids = special_prefix_ids(tokenizer)
        self.end_id = end_of_response_id(tokenizer)

    def prompt_text(self, example: Example) -> str:
        return build_prompt(example, self.tokenizer, self.shots)

    def prompt_ids(self, example: Example) -> list[int]:
        ids = _ids(self.tokenizer, self.prompt_text(example))
        if self.prefix_ids and ids[: len(self.prefix_ids)] != self.prefix_ids:
            ids = self.prefix_ids + ids
        return ids

    def response_ids(self, response: str) -> list[int]:
        return _ids(self.tokenizer, response) + [self.end_id]

    def context_cut_bounds(self, example: Example, n_drop: int, margin: int = 3) -> tuple[int, int] | None:
        """Character cuts of the context that drop about `n_drop` prompt tokens: (`margin` tokens more,
        `margin` tokens fewer). An estimate from the offsets of one tokenisation of the full prompt, to be
        verified by re-encoding; None where offsets are unavailable (slow tokenizers)."""
        context = example.context
        text = self.prompt_text(example)
        start = text.rfind(context)  # the example's own context comes after any shots
        if not context or start < 0:
            return None
        try:
            offsets = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)[
                "offset_mapping"
            ]
        except (NotImplementedError, ValueError, KeyError):
            return None
        end = start + len(context)
        ends = [b - start for a, b in offsets if a >= start and b <= end and b > a]
        keep = len(ends) - n_drop

        def char_after(k: int) -> int:
            return 0 if k <= 0 else ends[min(k, len(ends)) - 1]

        return char_after(keep - margin), char_after(keep + margin)

    def __repr__(self) -> str:
        shots = f", shots={len(self.shots)}" if self.shots else ""
        return f"SideEncoder({self.name}, prefix={self.prefix_ids}, end_id={self.end_id}{shots})"


class _ContextCutter:
    """Word-boundary cuts of one context: `cut(k)` = length of `context[:k]` moved back to the last whitespace
    (when there is one before k and k is inside a word), trailing whitespace removed. Monotone in k."""

    def __init__(self, context: str) -> None:
        self.context = context
        self.spaces = [m.start() for m in re.finditer(r"\s", context)]

    def cut(self, k: int) -> int:
        text = self.context
        if k >= len(text):
            return len(text)
        if k > 0 and not text[k].isspace():
            i = bisect.bisect_left(self.spaces, k) - 1
            if i >= 0:
                k = self.spaces[i]
        return len(text[:k].rstrip())


def _search_longest(candidates: Sequence[int], fits: Callable[[int], bool]) -> int:
    """Largest candidate c (ascending list) with fits(c), given fits(candidates[0]) and monotone fits."""
    lo, hi = 0, len(candidates) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(candidates[mid]):
            lo = mid
        else:
            hi = mid - 1
    return candidates[lo]


def encode_pair(
    example: Example,
    encoders: Sequence[SideEncoder],
    *,
    max_length: int,
    max_prompt_tokens: int | None = None,
    index: int = -1,
    response_field: str = "response",
    context_field: str = "context",
) -> tuple[list[SideFeature], int]:
    """Encode `example` for every encoder with one shared context cut; return (features, context chars kept).

    The cut is the longest word-boundary prefix of the context that fits every encoder. It is found from an
    estimate (the offsets of the over-long prompt's tokens) verified by re-encoding a few candidate cuts, with
    a plain binary search over the whole context as the fallback. `index` and the field names only serve to
    name the row in a `RowValidationError`.
    """
    responses = [enc.response_ids(example.response) for enc in encoders]
    for enc, resp in zip(encoders, responses, strict=True):
        if len(resp) >= max_length:
            raise RowValidationError.make(
                index,
                response_field,
                "too_long",
                f"response is {len(resp)} {enc.name} tokens with its end token; max_length is {max_length}",
            )

    def overflow(prompt: list[int], resp: list[int]) -> int:
        over = len(prompt) + len(resp) - max_length
        if max_prompt_tokens:
            over = max(over, len(prompt) - max_prompt_tokens)
        return over

    def prompts_for(ex: Example) -> list[list[int]] | None:
        out = []
        for enc, resp in zip(encoders, responses, strict=True):
            prompt = enc.prompt_ids(ex)
            if overflow(prompt, resp) > 0:
                return None
            out.append(prompt)
        return out

    full = [enc.prompt_ids(example) for enc in encoders]
    overflows = [overflow(p, r) for p, r in zip(full, responses, strict=True)]
    prompts: list[list[int]] | None = full
    if max(overflows) > 0:
        context = example.context
        cutter = _ContextCutter(context)
        tried: dict[int, list[list[int]] | None] = {}

        def fits(n_chars: int) -> bool:
            if n_chars not in tried:
                tried[n_chars] = prompts_for(example.with_context(context[:n_chars]))
            return tried[n_chars] is not None

        bounds = [
            enc.context_cut_bounds(example, over) if over > 0 else (len(context), len(context))
            for enc, over in zip(encoders, overflows, strict=True)
        ]
        n = -1
        if all(b is not None for b in bounds):
            lo = min(b[0] for b in bounds if b is not None)
            hi = min(b[1] for b in bounds if b is not None)
            candidates = sorted({cutter.cut(k) for k in range(lo, hi + 1)})
            if fits(candidates[0]):
                n = _search_longest(candidates, fits)
        if n < 0:  # no usable estimate: search the whole context
            if not fits(0):
                raise RowValidationError.make(
                    index,
                    context_field,
                    "too_long",
                    f"does not fit max_length={max_length}"
                    + (f", max_prompt_tokens={max_prompt_tokens}" if max_prompt_tokens else "")
                    + " even with the context removed (instruction and response alone are too long"
                    + "".join(
                        f", with the {len(enc.shots)} few-shot examples of the {enc.name}'s prompt"
                        for enc in encoders
                        if enc.shots
                    )
                    + ")",
                )
            candidates = sorted({cutter.cut(k) for k in cutter.spaces} | {0, len(context)})
            if len(candidates) < 3:  # no word boundaries (e.g. unsegmented scripts): cut anywhere
                candidates = list(range(len(context) + 1))
            n = _search_longest(candidates, fits)
        fits(n)
        prompts = tried[n]
        example = example.with_context(context[:n])
    assert prompts is not None
    features = [
        SideFeature(input_ids=prompt + resp, response_start=len(prompt))
        for prompt, resp in zip(prompts, responses, strict=True)
    ]
    return features, len(example.context)


class PairEncoder:
    """Teacher + student encoders with the length limits: `encode(example, index)` -> `PairedFeature`.

    `teacher_shots`: the few-shot examples the teacher's prompts show (the student's prompt stays zero-shot),
    so the teacher's logits are taken in the context it answered in (`otdistill.steps.teacher_answers`).
    """

    def __init__(
        self,
        teacher_tokenizer: Any,
        student_tokenizer: Any,
        *,
        max_length: int = 1024,
        max_prompt_tokens: int | None = None,
        teacher_shots: Sequence[Example] = (),
    ) -> None:
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {max_length}")
        self.teacher = SideEncoder(teacher_tokenizer, "teacher", teacher_shots)
        self.student = SideEncoder(student_tokenizer, "student")
        self.max_length = max_length
        self.max_prompt_tokens = max_prompt_tokens

    def encode(
        self,
        example: Example,
        index: int = -1,
        *,
        response_field: str = "response",
        context_field: str = "context",
    ) -> PairedFeature:
        (teacher, student), kept = encode_pair(
            example,
            (self.teacher, self.student),
            max_length=self.max_length,
            max_prompt_tokens=self.max_prompt_tokens,
            index=index,
            response_field=response_field,
            context_field=context_field,
        )
        return PairedFeature(example.id, teacher, student, kept < len(example.context), kept)
