"""Batched greedy generation for decoder-only models, teacher and students alike.

Why it is written this way:

* Left padding. A decoder-only model continues from the last position of each row, so the prompts of a batch
  are right-aligned (padding on the left) with an attention mask; ``generate`` derives position ids from the
  mask, so a padded row generates exactly what it generates alone. We pad by hand rather than flipping the
  tokenizer's ``padding_side``, so a tokenizer shared with training is never mutated.
* Stop tokens. A chat model ends its turn with its own end-of-turn token (``<|im_end|>`` for ChatML,
  ``<end_of_turn>`` for Gemma), which is not always its configured EOS; generation stops on any of the
  model's EOS ids and the end-of-turn tokens that exist in its vocabulary.
* Continuous batching. A fixed batch keeps every row until its longest row stops, so on DialogSum about a
  third of the decode row-steps of a batch of 16 were spent on finished rows, and one padded prompt pass
  per batch wasted compute on padding. Where the model's KV cache is plain full attention (`DynamicLayer`
  in every layer: Llama, SmolLM2, Qwen, ...), a batch of up to `batch_size` rows decodes together, a row
  leaves the moment it stops (its cache rows are dropped) and the next prompt takes its place: each prompt is
  processed alone, with no padding, and its cache is joined to the batch's, right-aligned (left padding
  in the cache, masked). Models with other cache layers (Gemma 3's sliding-window layers) use fixed batches
  through ``generate``. Both give what each prompt generates alone (tested).
* Prefix caching. Evaluation prompts share their start (chat template, system turn, task instruction); on the
  continuous path that shared prefix is processed once and each prompt starts from a copy of its cache.
* Length-sorted order. Prompts are taken longest first, so rows of similar length decode together and a
  fixed batch wastes little compute on padding; results come back in the caller's order.
* BOS exactly once, as in training. A prompt rendered by a chat template may already start with the BOS
  token text; it gets no second one (`encode_prompt` follows ``otdistill.data.SideEncoder``).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from transformers import GenerationConfig, GenerationMixin, PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import DynamicCache, DynamicLayer
from transformers.generation.streamers import BaseStreamer

from otdistill.data.tokenization import special_prefix_ids
from otdistill.progress import progress_bar as tqdm

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
    prefill_seconds: the part of `seconds` spent processing prompts (up to each prompt's first new token),
      summed: the share of the work that batching cannot shrink much on a CPU.
    continuous: whether the continuous-batching path ran (False: fixed batches through ``generate``).
    shared_prefix_tokens: length of the token prefix common to all prompts that was processed once (prefix
      caching, continuous path only; 0 when none was used).
    """

    texts: list[str]
    num_tokens: list[int]
    stopped: list[bool]
    prompt_tokens: list[int]
    seconds: float
    prefill_seconds: float = 0.0
    continuous: bool = False
    shared_prefix_tokens: int = 0

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
    continuous_batching: bool = True,
    show_progress: bool = True,
    desc: str = "generate",
) -> Generation:
    """Greedy-decode a continuation of every prompt, up to `batch_size` rows decoding together.

    Prompts are text that ends exactly where the answer starts (``otdistill.data.build_prompt``), encoded with
    `encode_prompt`, or token ids already encoded (BOS included where the model wants one). Generation
    of a row stops at the first stop token (`stop_token_ids` plus `extra_stop_ids`) or after `max_new_tokens`.
    Continuous batching is used where the model supports it (`supports_continuous_batching`) unless
    `continuous_batching` is False (fixed batches through ``generate``, as for models that do not). A
    progress bar counts prompts.
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

    continuous = continuous_batching and supports_continuous_batching(model)
    was_training = model.training
    model.eval()
    try:
        with (
            torch.inference_mode(),
            tqdm(total=len(encoded), desc=desc, unit="prompt", disable=not show_progress) as bar,
        ):

            def done(i: int, row: list[int]) -> None:
                """Record prompt `i`'s generated tokens `row` (cut after its first stop token)."""
                cut = next((n for n, t in enumerate(row) if t in stop_set), None)
                kept = row if cut is None else row[:cut]
                texts[i] = str(tokenizer.decode(kept, skip_special_tokens=True)).strip()
                num_tokens[i] = len(row) if cut is None else cut + 1
                stopped[i] = cut is not None
                bar.update(1)
                bar.set_postfix(tokens_per_s=f"{sum(num_tokens) / (time.perf_counter() - start):.1f}")

            if continuous:
                prefill, shared = _continuous_greedy(
                    model, encoded, order, batch_size, max_new_tokens, stop_set, done=done
                )
            else:
                prefill, shared = _fixed_batches_greedy(
                    model, encoded, order, batch_size, config, int(pad_id), done=done
                )
    finally:
        model.train(was_training)
    return Generation(
        texts=texts,
        num_tokens=num_tokens,
        stopped=stopped,
        prompt_tokens=[len(e) for e in encoded],
        seconds=time.perf_counter() - start,
        prefill_seconds=prefill,
        continuous=continuous,
        shared_prefix_tokens=shared,
    )


def supports_continuous_batching(model: PreTrainedModel) -> bool:
    """Whether `greedy_generate` can decode `model` with continuous batching: every layer of its KV cache is a
    plain full-attention `DynamicLayer` (rows can be dropped and joined by editing the cache tensors), and its
    forward takes explicit ``position_ids``, a ``cache`` and ``logits_to_keep``."""
    params = inspect.signature(model.forward).parameters
    if not {"position_ids", "cache", "logits_to_keep"} <= params.keys():
        return False
    layers = DynamicCache(config=model.config).layers
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def _fixed_batches_greedy(
    model: PreTrainedModel,
    encoded: list[list[int]],
    order: list[int],
    batch_size: int,
    config: GenerationConfig,
    pad_id: int,
    *,
    done: Callable[[int, list[int]], None],
) -> tuple[float, int]:
    """``generate`` on left-padded batches of `batch_size` prompts in `order`; returns the prefill seconds
    and 0 (no shared prefix)."""
    prefill = 0.0
    device = next(model.parameters()).device
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        clock = _FirstTokenClock()
        input_ids, attention_mask = _left_pad([encoded[i] for i in idx], pad_id, device)
        out = cast(GenerationMixin, model).generate(
            input_ids=input_ids, attention_mask=attention_mask, generation_config=config, streamer=clock
        )
        prefill += clock.prefill_seconds
        for row, i in zip(cast(torch.Tensor, out)[:, input_ids.shape[1] :].tolist(), idx, strict=True):
            done(i, row)
    return prefill, 0


class _BufferedLayer(DynamicLayer):
    """A full-attention cache layer whose keys and values sit in buffers with spare columns, so a decode step
    writes its one new column in place; `DynamicLayer.update` concatenates, copying the whole cache of the
    batch at every step (about a tenth of a batch-16 decode step on a CPU)."""

    def __init__(self, buffers: tuple[torch.Tensor, torch.Tensor], length: int) -> None:
        """`buffers`: keys and values, (batch, heads, capacity, head_dim), of which the first `length` columns
        hold the cache."""
        super().__init__()
        self.device = buffers[0].device
        self.is_initialized = True
        self._length = length
        self._buffers = list(buffers)
        self._views()

    @staticmethod
    def _allocate(t: torch.Tensor, spare: int) -> torch.Tensor:
        buf = t.new_empty((t.shape[0], t.shape[1], t.shape[2] + spare, t.shape[3]))
        buf[:, :, : t.shape[2]] = t
        return buf

    def _views(self) -> None:
        self.keys, self.values = (buf[:, :, : self._length] for buf in self._buffers)

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        new = key_states.shape[2]
        if self._length + new > self._buffers[0].shape[2]:
            self._buffers = [
                self._allocate(buf[:, :, : self._length], self._length + new) for buf in self._buffers
            ]
        for buf, states in zip(self._buffers, (key_states, value_states), strict=True):
            buf[:, :, self._length : self._length + new] = states
        self._length += new
        self._views()
        return cast(torch.Tensor, self.keys), cast(torch.Tensor, self.values)


class _Batch:
    """The rows decoding together: one KV cache with the rows right-aligned (left padding, masked), its
    2-D attention mask, and per row the prompt index, the generated tokens and the next position id."""

    def __init__(self, device: torch.device, spare: int) -> None:
        self.device = device
        self.spare = spare  # free cache columns kept for the coming decode steps
        self.cache: DynamicCache | None = None
        self.mask = torch.zeros((0, 0), dtype=torch.long, device=device)
        self.index: list[int] = []
        self.tokens: list[list[int]] = []
        self.position: list[int] = []

    def __len__(self) -> int:
        return len(self.index)

    def join(self, rows: list[tuple[int, DynamicCache, list[int], int]]) -> None:
        """Add rows (prompt index, its own one-row cache, generated tokens, next position id): every cache is
        left-padded to the widest and the caches are stacked along the batch."""
        new_widths = [c.get_seq_length() for _, c, _, _ in rows]
        caches = ([self.cache] if self.cache is not None else []) + [c for _, c, _, _ in rows]
        width = max([self.mask.shape[1], *new_widths])
        batch = len(self) + len(rows)
        merged = caches[0]
        for layer_idx in range(len(merged.layers)):
            stacked = []
            for name in ("keys", "values"):
                parts = [cast(torch.Tensor, getattr(c.layers[layer_idx], name)) for c in caches]
                out = parts[0].new_zeros((batch, parts[0].shape[1], width + self.spare, parts[0].shape[3]))
                row = 0
                for part in parts:
                    out[row : row + part.shape[0], :, width - part.shape[2] : width] = part
                    row += part.shape[0]
                stacked.append(out)
            merged.layers[layer_idx] = _BufferedLayer((stacked[0], stacked[1]), width)
        mask = torch.zeros((batch, width), dtype=torch.long, device=self.device)
        mask[: len(self), width - self.mask.shape[1] :] = self.mask
        for r, row_width in enumerate(new_widths, start=len(self)):
            mask[r, width - row_width :] = 1
        self.cache, self.mask = merged, mask
        for i, _, tokens, position in rows:
            self.index.append(i)
            self.tokens.append(tokens)
            self.position.append(position)

    def keep(self, rows: list[int]) -> None:
        """Keep only `rows` (batch positions); drop cache columns that are padding in every remaining row."""
        if not rows:
            self.cache, self.mask = None, self.mask[:0, :0]
            self.index, self.tokens, self.position = [], [], []
            return
        assert self.cache is not None
        select = torch.tensor(rows, device=self.device)
        first = int(self.mask[select].any(0).long().argmax())
        for layer_idx, layer in enumerate(self.cache.layers):
            kept = [
                _BufferedLayer._allocate(
                    cast(torch.Tensor, getattr(layer, name))[select, :, first:], self.spare
                )
                for name in ("keys", "values")
            ]
            self.cache.layers[layer_idx] = _BufferedLayer((kept[0], kept[1]), kept[0].shape[2] - self.spare)
        self.mask = self.mask[select, first:]
        self.index = [self.index[r] for r in rows]
        self.tokens = [self.tokens[r] for r in rows]
        self.position = [self.position[r] for r in rows]

    def step(self, model: PreTrainedModel) -> list[int]:
        """One decode step for every row: feed each row's last token, return each row's next token."""
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self), 1))], dim=1)
        out = model(
            input_ids=torch.tensor([[t[-1]] for t in self.tokens], device=self.device),
            attention_mask=self.mask,
            position_ids=torch.tensor([[p] for p in self.position], device=self.device),
            cache=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self.position = [p + 1 for p in self.position]
        return [int(t) for t in out.logits[:, -1].float().argmax(-1).tolist()]


class _SharedPrefix:
    """Prefix caching: the token prefix that every prompt starts with (the chat template's system turn and the
    task's instruction: 38 of DialogSum's ~250 prompt tokens for SmolLM2) is processed once, and each prompt
    starts from a copy of its KV cache instead of processing it again. Used when the prefix has at least
    `MIN_TOKENS` tokens and there are several prompts; every prompt keeps at least its last token to process,
    which gives its first generated token."""

    MIN_TOKENS = 8

    def __init__(self, model: PreTrainedModel, encoded: list[list[int]], device: torch.device) -> None:
        self.model = model
        self.length = 0
        self.cache: DynamicCache | None = None
        if len(encoded) < 2:
            return
        length = min(len(ids) for ids in encoded) - 1
        first = encoded[0]
        for ids in encoded[1:]:
            length = next((n for n in range(length) if ids[n] != first[n]), length)
        if length < self.MIN_TOKENS:
            return
        self.length = length
        self.cache = DynamicCache(config=model.config)
        model(input_ids=torch.tensor([first[:length]], device=device), cache=self.cache, use_cache=True)

    def start(self, ids: list[int]) -> tuple[DynamicCache, list[int]]:
        """A fresh one-row cache holding the shared prefix (empty without one), and the tokens of `ids` that
        are still to be processed."""
        cache = DynamicCache(config=self.model.config)
        if self.cache is None:
            return cache, ids
        for layer, prefix in zip(cache.layers, self.cache.layers, strict=True):
            kv = cast(DynamicLayer, prefix)
            cast(DynamicLayer, layer).update(cast(torch.Tensor, kv.keys), cast(torch.Tensor, kv.values))
        return cache, ids[self.length :]


def _continuous_greedy(
    model: PreTrainedModel,
    encoded: list[list[int]],
    order: list[int],
    batch_size: int,
    max_new_tokens: int,
    stop_set: set[int],
    *,
    done: Callable[[int, list[int]], None],
) -> tuple[float, int]:
    """Greedy decoding with continuous batching (see the module docstring); returns the prefill seconds and
    the shared prefix length."""
    device = next(model.parameters()).device
    pending = deque(order)
    batch = _Batch(device, spare=max_new_tokens)
    t0 = time.perf_counter()
    shared = _SharedPrefix(model, encoded, device)
    prefill = time.perf_counter() - t0
    while pending or len(batch):
        joining: list[tuple[int, DynamicCache, list[int], int]] = []
        while pending and len(batch) + len(joining) < batch_size:
            i = pending.popleft()
            t0 = time.perf_counter()
            cache, rest = shared.start(encoded[i])
            out = model(
                input_ids=torch.tensor([rest], device=device),
                position_ids=torch.arange(len(encoded[i]) - len(rest), len(encoded[i]), device=device)[None],
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            first = int(out.logits[0, -1].float().argmax())
            prefill += time.perf_counter() - t0
            if first in stop_set or max_new_tokens == 1:
                done(i, [first])
            else:
                joining.append((i, cache, [first], len(encoded[i])))
        if joining:
            batch.join(joining)
        if not len(batch):
            continue
        keep: list[int] = []
        for r, token in enumerate(batch.step(model)):
            batch.tokens[r].append(token)
            if token in stop_set or len(batch.tokens[r]) >= max_new_tokens:
                done(batch.index[r], batch.tokens[r])
            else:
                keep.append(r)
        if len(keep) < len(batch):
            batch.keep(keep)
    return prefill, shared.length
