"""Rendering an example as the prompt one model sees.

The prompt ends exactly where the response starts, for every model: with the model's own chat template and
`add_generation_prompt=True` when the tokenizer has one (instruct models), else with `PLAIN_TEMPLATE` (base
models). The plain template ends with a newline after "Response:", so that the response, which the caller
tokenises separately, starts a new line for a byte-level BPE tokenizer (no space token is needed) and a
SentencePiece tokenizer alike.

A few-shot prompt (the teacher of the authors' recipe, `TargetsConfig`) puts solved examples, the `shots`,
before the example, in the same format: earlier user / assistant turns in a chat, or earlier plain blocks
each followed by its response and a blank line. The prompt still ends where the example's response starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from otdistill.data.examples import Example

#: Base-model prompt layout; `{context_block}` is the context and a blank line, or nothing without a context.
PLAIN_TEMPLATE = "### Instruction:\n{instruction}\n\n{context_block}### Response:\n"


def user_message(example: Example) -> str:
    """What the user says in a chat: the instruction, then the context (if any) after a blank line."""
    return "\n\n".join(part for part in (example.instruction, example.context) if part)


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _plain_prompt(example: Example) -> str:
    if not example.instruction:  # a task that is all context (e.g. continue this text)
        return f"### Input:\n{example.context}\n\n### Response:\n"
    context_block = f"### Input:\n{example.context}\n\n" if example.context else ""
    return PLAIN_TEMPLATE.format(instruction=example.instruction, context_block=context_block)


def build_prompt(example: Example, tokenizer: Any, shots: Sequence[Example] = ()) -> str:
    """The prompt text for `tokenizer`'s model; it ends exactly where the response starts.

    `shots`: solved examples shown first (few-shot), each with its response. A chat template may itself
    begin with the BOS text (Gemma's does); `tokenize_side` notices that and does not add a second BOS.
    """
    if has_chat_template(tokenizer):
        messages: list[dict[str, str]] = []
        for shot in shots:
            messages.append({"role": "user", "content": user_message(shot)})
            messages.append({"role": "assistant", "content": shot.response})
        messages.append({"role": "user", "content": user_message(example)})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if not isinstance(text, str):
            raise TypeError(f"apply_chat_template returned {type(text).__name__}, expected str")
        return text
    solved = "".join(f"{_plain_prompt(shot)}{shot.response}\n\n" for shot in shots)
    return solved + _plain_prompt(example)
