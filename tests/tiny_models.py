"""Tiny random cross-tokenizer model pairs for fast tests.

Real tokenizers are trained here, in the test process, on real task text (the `tokenizers` library), so
the pair differs the way the real pair does: the teacher is Gemma-like (Unigram / SentencePiece-style
tokenizer that adds a BOS, no chat template: a base model) and the student is SmolLM2-like (byte-level
BPE, no BOS, a ChatML chat template). The models are random-weight transformers built from config.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def corpus_lines(limit: int = 400) -> Iterator[str]:
    """Real text from the shared DialogSum and QED training files."""
    sources = (("dialogsum", ("dialogue", "summary")), ("qed", ("question_text", "paragraph_text")))
    for name, fields in sources:
        with open(SHARED_DATA / name / "train.jsonl", encoding="utf-8") as fh:
            for n, line in enumerate(fh):
                if n >= limit:
                    break
                row = json.loads(line)
                for f in fields:
                    yield str(row[f])


def _teacher_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"],
        unk_token="<unk>",
        show_progress=False,
    )
    tok.train_from_iterator(corpus_lines(), trainer=trainer)
    bos = tok.token_to_id("<bos>")
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def _student_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus_lines(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|im_start|>"
    )
    fast.chat_template = CHATML
    return fast


def make_tiny_pair(root: Path, teacher_vocab: int = 600, student_vocab: int = 400) -> tuple[Path, Path]:
    """Write a tiny (teacher, student) pair as model directories under `root`; return their paths."""
    t_tok = _teacher_tokenizer(teacher_vocab)
    s_tok = _student_tokenizer(student_vocab)
    t_cfg = Gemma3TextConfig(
        vocab_size=len(t_tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=2048,
        sliding_window=64,
        pad_token_id=t_tok.pad_token_id,
        bos_token_id=t_tok.bos_token_id,
        eos_token_id=t_tok.eos_token_id,
    )
    s_cfg = LlamaConfig(
        vocab_size=len(s_tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        pad_token_id=s_tok.pad_token_id,
        bos_token_id=s_tok.bos_token_id,
        eos_token_id=s_tok.eos_token_id,
        tie_word_embeddings=True,
    )
    import torch

    torch.manual_seed(0)
    teacher_dir, student_dir = root / "tiny-teacher", root / "tiny-student"
    Gemma3ForCausalLM(t_cfg).save_pretrained(teacher_dir)
    t_tok.save_pretrained(teacher_dir)
    LlamaForCausalLM(s_cfg).save_pretrained(student_dir)
    s_tok.save_pretrained(student_dir)
    return teacher_dir, student_dir
