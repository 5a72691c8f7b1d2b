"""Student distillation end to end on the tiny cross-tokenizer pair: every loss, both teacher sources."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from otdistill.data import Example, PairedCollator, PairEncoder
from otdistill.teacher_cache import build_teacher_cache
from otdistill.training import TrainResult, distill_student, verify_checkpoint
from tests.training.conftest import MAX_LENGTH, tiny_config

PARTS = {
    "multilevel_ot": ["loss_ce", "loss_had", "loss_sl", "loss_sd"],
    "uld": ["loss_ce", "loss_uld"],
    "none": ["loss_ce"],
}


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def test_multilevel_ot_live_teacher(
    tiny_pair: tuple[Path, Path], examples: list[Example], tmp_path: Path
) -> None:
    teacher, student = tiny_pair
    result = distill_student(tiny_config(tmp_path / "run"), student, teacher, examples, max_length=MAX_LENGTH)

    assert result.global_step == 4 and len(result.history) == 4
    for row in result.history:  # every part, lr, throughput and memory at every logged step
        for key in [*PARTS["multilevel_ot"], "loss", "learning_rate", "tokens_per_second", "memory_gb"]:
            assert key in row and row[key] == row[key], key
        ce, had, sl, sd = (row[k] for k in PARTS["multilevel_ot"])
        assert row["loss"] == pytest.approx(ce + 0.15 * (had + 0.1 * sl + 0.1 * sd), rel=1e-5)
        assert had > 0 and sl > 0 and sd > 0
    assert result.record["precision.name"] == "fp32" and result.record["teacher_source"] == "live"
    assert result.record["determinism"]["seed"] == 42

    # a plain HF model + tokenizer, loadable without otdistill or peft, and changed by training
    model = AutoModelForCausalLM.from_pretrained(result.model_dir)
    assert AutoTokenizer.from_pretrained(result.model_dir).chat_template
    before = _weights(student)
    after = _weights(result.model_dir)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert model.config.vocab_size == AutoModelForCausalLM.from_pretrained(student).config.vocab_size
    assert TrainResult.load(result.model_dir).global_step == 4
    # the weights are recorded, so a report can say what each term is of the objective
    assert result.weights == pytest.approx({"ce": 1.0, "had": 0.15, "sl": 0.015, "sd": 0.015})
    shares = TrainResult.load(result.model_dir).objective_shares()
    assert list(shares) == ["ce", "had", "sl", "sd"] and sum(shares.values()) == pytest.approx(1.0)
    first = result.history[0]
    assert shares["ce"] < 1 and 0.015 * first["loss_sd"] / first["loss"] == pytest.approx(
        shares["sd"], rel=0.5
    )
    for step in (2, 4):
        assert verify_checkpoint(result.output_dir / f"checkpoint-{step}") is None


def test_gradient_accumulation_equals_the_bigger_batch(
    tiny_pair: tuple[Path, Path], examples: list[Example], tmp_path: Path
) -> None:
    """Batch 2 x 2 accumulation steps == batch 4: the loss is normalised by the whole step's counts."""
    teacher, student = tiny_pair
    common = {"max_steps": 2, "save_steps": 10, "learning_rate": 3e-3}
    acc = tiny_config(tmp_path / "acc", per_device_batch_size=2, gradient_accumulation_steps=2, **common)
    big = tiny_config(tmp_path / "big", per_device_batch_size=4, **common)
    runs = [distill_student(c, student, teacher, examples, max_length=MAX_LENGTH) for c in (acc, big)]
    for a, b in zip(runs[0].history, runs[1].history, strict=True):
        for key in PARTS["multilevel_ot"]:
            assert a[key] == pytest.approx(b[key], rel=1e-5), key
    w_acc, w_big = _weights(runs[0].model_dir), _weights(runs[1].model_dir)
    for key in w_big:
        torch.testing.assert_close(w_acc[key], w_big[key], rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.parametrize("loss", ["uld", "none"])
def test_other_losses_log_their_parts(
    loss: str, tiny_pair: tuple[Path, Path], examples: list[Example], tmp_path: Path
) -> None:
    teacher, student = tiny_pair
    # the SFT baseline also runs with activation checkpointing (the Trainer's switch)
    cfg = tiny_config(
        tmp_path / loss, loss=loss, max_steps=2, save_steps=10, gradient_checkpointing=loss == "none"
    )
    result = distill_student(
        cfg, student, teacher if loss != "none" else None, examples, max_length=MAX_LENGTH
    )
    for row in result.history:
        assert {k for k in row if k.startswith("loss_")} == set(PARTS[loss])
    if loss == "uld":
        row = result.history[0]
        assert row["loss"] == pytest.approx(row["loss_ce"] + 0.15 * row["loss_uld"], rel=1e-5)


def test_kl_is_refused_across_tokenizers(
    tiny_pair: tuple[Path, Path], examples: list[Example], tmp_path: Path
) -> None:
    teacher, student = tiny_pair
    with pytest.raises(
        ValueError, match="loss 'kl' needs the teacher and the student to share one tokenizer"
    ):
        distill_student(tiny_config(tmp_path, loss="kl"), student, teacher, examples, max_length=MAX_LENGTH)


def test_kl_with_one_tokenizer(tiny_pair: tuple[Path, Path], examples: list[Example], tmp_path: Path) -> None:
    """The student as its own teacher: same tokenizer, so KL runs, and is 0 before the first update."""
    student = tiny_pair[1]
    cfg = tiny_config(tmp_path, loss="kl", max_steps=2, save_steps=10)
    result = distill_student(cfg, student, student, examples, max_length=MAX_LENGTH)
    assert result.history[0]["loss_kl"] == pytest.approx(0.0, abs=1e-6)
    assert result.history[1]["loss_kl"] > 1e-6  # the student moved, the frozen teacher did not


def test_cached_teacher_gives_the_live_teachers_loss(
    tiny_pair: tuple[Path, Path], examples: list[Example], tmp_path: Path
) -> None:
    """A cache built from the same teacher reproduces the live run's loss parts (MultiLevelOT is exact)."""
    teacher, student = tiny_pair
    t_tok, s_tok = AutoTokenizer.from_pretrained(teacher), AutoTokenizer.from_pretrained(student)
    encoder = PairEncoder(t_tok, s_tok, max_length=MAX_LENGTH)
    features = [encoder.encode(ex, i) for i, ex in enumerate(examples)]
    collate = PairedCollator.from_tokenizers(t_tok, s_tok)
    batches = [collate(features[i : i + 4]) for i in range(0, len(features), 4)]
    cache_dir = tmp_path / "cache"
    t_model = AutoModelForCausalLM.from_pretrained(teacher)
    build_teacher_cache(t_model, batches, cache_dir, k=50, K_uld=64, shard_size=8, progress=False)

    live = distill_student(
        tiny_config(tmp_path / "live", max_steps=3), student, teacher, examples, max_length=MAX_LENGTH
    )
    cached_cfg = tiny_config(
        tmp_path / "cached", max_steps=3, teacher_source="cache", teacher_cache_uri=str(cache_dir)
    )
    cached = distill_student(cached_cfg, student, teacher, examples, max_length=MAX_LENGTH)
    assert cached.record["teacher_source"] == "cache"
    for a, b in zip(live.history, cached.history, strict=True):
        for key in PARTS["multilevel_ot"]:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key


def test_result_file_is_json(tiny_pair: tuple[Path, Path], examples: list[Example], tmp_path: Path) -> None:
    teacher, student = tiny_pair
    result = distill_student(
        tiny_config(tmp_path, max_steps=1, save_steps=10), student, teacher, examples, max_length=MAX_LENGTH
    )
    data = json.loads((result.model_dir / "training_result.json").read_text())
    assert data["stage"] == "distill" and data["global_step"] == 1
    assert not (result.output_dir / ".staging").exists()
