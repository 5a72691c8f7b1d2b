"""Batched greedy generation for decoder-only models, teacher and students alike.

Why it is written this way:

* Left padding. A decoder-only model continues from the last position of each row, so the prompts of a batch
  are right-aligned (padding on the left) with an attention mask; ``generate`` derives position ids from the
  mask, so a padded row generates exactly what it generates alone. We pad by hand rather than flipping the
  tokenizer's ``padding_side``, so a tokenizer shared with training is never mutated.
* Stop tokens. A chat model ends its turn with its own end-of-turn token (``<|im_end|>`` for ChatML,
  ``<end_of_turn>`` for Gemma), which is not always its configured EOS; generation stops on any of the
  model's EOS ids and the end-of-turn tokens that exist in its vocabulary.
* Length-sorted batches. Prompts are batched in order of token length, so a batch wastes little compute on
  padding; results come back in the caller's order.
* BOS exactly once, as in training. A prompt rendered by a chat template may already start with the BOS
  token text; it gets no second one (`encode_prompt` follows ``otdistill.data.SideEncoder``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, GenerationMixin, PreTrainedModel, PreTrainedTokenizerBase
from transformers.generation.streamers import BaseStreamer

from otdistill.data.tokenization import special_prefix_ids

logger = logging.getLogger(__name__)

# End-of-turn / end-of-text tokens of common chat formats; those present in a vocabulary also stop generation.
END_OF_TURN_TOKENS: tuple[str, ...] = (
    "<|im_end|>",  # ChatML (SmolLM2, Qwen)
    "<end_of_turn>",  # Gemma
    "<|eot_id|>",  # Llama 3
    "<|end|>",  # Phi-3
    "<|endoftext|>",  # GPT-2 family, SmolLM2
    "</s>",  # Llama 2, Mistral
    "<eos>",  # Gemma base
)


@dataclass(frozen=True)
class Generation:
    """What `greedy_generate` returns, in the order of the prompts it was given.

    texts: the generated continuations, decoded without special tokens and stripped; the prompt never
      appears in them.
    num_tokens: generated tokens per prompt, counting the stop token when there was one.
    stopped: whether each generation ended on a stop token (False: it ran into ``max_new_tokens``).
    prompt_tokens: prompt length in tokens, BOS included.
    seconds: wall-clock time of the whole call (tokenisation, generation, decoding).
    prefill_seconds: the part of `seconds` spent before each batch's first new token (prompt processing),
      summed over batches: the share of the work that batching cannot shrink much on a CPU.
    """

    texts: list[str]
    num_tokens: list[int]
    stopped: list[bool]
    prompt_tokens: list[int]
    seconds: float
    prefill_seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens per wall-clock second (stop tokens included, padding after a stop excluded)."""
        return sum(self.num_tokens) / self.seconds if self.seconds > 0 else 0.0


class _FirstTokenClock(BaseStreamer):
    """A `generate` streamer that notes when the first new token arrives (``put`` #1 is the prompt)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first_token_at: float | None = None
        self._puts = 0

    def put(self, value: Any) -> None:
        self._puts += 1
        if self._puts == 2:
            self.first_token_at = time.perf_counter()

    def end(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()

    @property
    def prefill_seconds(self) -> float:
        return (self.first_token_at or time.perf_counter()) - self.start


def _ids(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


def stop_token_ids(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel | None = None) -> list[int]:
    """The ids that end a generation: the model's and tokenizer's EOS ids, and known end-of-turn tokens.

    An end-of-turn token counts only when it is a single token of this vocabulary. Order: model generation
    config, model config, tokenizer EOS, then `END_OF_TURN_TOKENS`; duplicates removed.
    """
    ids: list[int] = []
    if model is not None:
        gen_cfg = getattr(model, "generation_config", None)
        ids += _ids(getattr(gen_cfg, "eos_token_id", None))
        ids += _ids(getattr(model.config, "eos_token_id", None))
    ids += _ids(tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    for token in END_OF_TURN_TOKENS:
        if token in vocab:
            ids.append(int(vocab[token]))
    unique = list(dict.fromkeys(ids))
    if not unique:
        raise ValueError(
            "the tokenizer and model define no EOS or end-of-turn token: generation could not stop"
        )
    return unique


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """Token ids of `prompt` as training encodes it: no special suffix, the tokenizer's special prefix
    (BOS) once, prepended unless the text (a chat template's output) already starts with it."""
    ids = [int(i) for i in tokenizer(prompt, add_special_tokens=False)["input_ids"]]
    prefix = special_prefix_ids(tokenizer)
    if prefix and ids[: len(prefix)] != prefix:
        ids = prefix + ids
    return ids


def _greedy_config(max_new_tokens: int, stop_ids: list[int], pad_id: int) -> GenerationConfig:
    # Every sampling / penalty knob is set explicitly, so a model's own generation_config.json (which
    # ``generate`` merges in for unset fields) cannot turn greedy decoding into something else.
    return GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        min_new_tokens=0,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        eos_token_id=stop_ids,
        pad_token_id=pad_id,
        use_cache=True,
    )


def _left_pad(rows: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, width - len(row) :] = 1
    return input_ids.to(device), attention_mask.to(device)


def greedy_generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str | Sequence[int]],
    *,
    max_new_tokens: int = 128,
    batch_size: int = 8,
    extra_stop_ids: Sequence[int] = (),
    sort_by_length: bool = True,
    show_progress: bool = True,
    desc: str = "generate",
) -> Generation:
    """Greedy-decode a continuation of every prompt, `batch_size` prompts at a time, left-padded.

    Prompts are text that ends exactly where the answer starts (``otdistill.data.build_prompt``), encoded with
    `encode_prompt`, or token ids already encoded (BOS included where the model wants one). Generation
    of a row stops at the first stop token (`stop_token_ids` plus `extra_stop_ids`) or after `max_new_tokens`.
    A progress bar counts prompts.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    start = time.perf_counter()
    stop_ids = list(dict.fromkeys([*stop_token_ids(tokenizer, model), *(int(i) for i in extra_stop_ids)]))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    config = _greedy_config(max_new_tokens, stop_ids, int(pad_id))
    stop_set = set(stop_ids)

    encoded = [encode_prompt(tokenizer, p) if isinstance(p, str) else [int(i) for i in p] for p in prompts]
    for i, ids in enumerate(encoded):
        if not ids:
            raise ValueError(f"prompt {i} is empty after tokenisation: there is nothing to continue")
    order = list(range(len(encoded)))
    if sort_by_length:
        order.sort(key=lambda i: len(encoded[i]), reverse=True)

    texts = [""] * len(encoded)
    num_tokens = [0] * len(encoded)
    stopped = [False] * len(encoded)
    prefill = 0.0
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with (
            torch.inference_mode(),
            tqdm(total=len(encoded), desc=desc, unit="prompt", disable=not show_progress) as bar,
        ):
            for b in range(0, len(order), batch_size):
                idx = order[b : b + batch_size]
                clock = _FirstTokenClock()
                input_ids, attention_mask = _left_pad([encoded[i] for i in idx], int(pad_id), device)
                out = cast(GenerationMixin, model).generate(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    generation_config=config,
                    streamer=clock,
                )
                prefill += clock.prefill_seconds
                new = cast(torch.Tensor, out)[:, input_ids.shape[1] :].tolist()
                for row, i in zip(new, idx, strict=True):
                    cut = next((n for n, t in enumerate(row) if t in stop_set), None)
                    kept = row if cut is None else row[:cut]
                    texts[i] = str(tokenizer.decode(kept, skip_special_tokens=True)).strip()
                    num_tokens[i] = len(row) if cut is None else cut + 1
                    stopped[i] = cut is not None
                bar.update(len(idx))
                bar.set_postfix(tokens_per_s=f"{sum(num_tokens) / (time.perf_counter() - start):.1f}")
    finally:
        model.train(was_training)
    return Generation(
        texts=texts,
        num_tokens=num_tokens,
        stopped=stopped,
        prompt_tokens=[len(e) for e in encoded],
        seconds=time.perf_counter() - start,
        prefill_seconds=prefill,
    )
