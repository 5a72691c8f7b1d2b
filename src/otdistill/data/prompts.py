"""Rendering an example as the prompt one model sees.

The prompt ends exactly where the response starts, for every model: with the model's own chat template and
`add_generation_prompt=True` when the tokenizer has one (instruct models), else with `PLAIN_TEMPLATE` (base
models). The plain template ends with a newline after "Response:", so that the response, which the caller
tokenises separately, starts a new line for a byte-level BPE tokenizer (no space token is needed) and a
SentencePiece tokenizer alike.
"""

from __future__ import annotations

from typing import Any

from otdistill.data.examples import Example

#: Base-model prompt layout; `{context_block}` is the context and a blank line, or nothing without a context.
PLAIN_TEMPLATE = "### Instruction:\n{instruction}\n\n{context_block}### Response:\n"


def user_message(example: Example) -> str:
    """What the user says in a chat: the instruction, then the context (if any) after a blank line."""
    return "\n\n".join(part for part in (example.instruction, example.context) if part)


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def build_prompt(example: Example, tokenizer: Any) -> str:
    """The prompt text for `tokenizer`'s model; it ends exactly where the response starts.

    A chat template may itself begin with the BOS text (Gemma's does); `tokenize_side` notices that and does
    not add a second BOS.
    """
    if has_chat_template(tokenizer):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": user_message(example)}], tokenize=False, add_generation_prompt=True
        )
        if not isinstance(text, str):
            raise TypeError(f"apply_chat_template returned {type(text).__name__}, expected str")
        return text
    if not example.instruction:  # a task that is all context (e.g. continue this text)
        return f"### Input:\n{example.context}\n\n### Response:\n"
    context_block = f"### Input:\n{example.context}\n\n" if example.context else ""
    return PLAIN_TEMPLATE.format(instruction=example.instruction, context_block=context_block)
