"""cache_teacher_for_run: the whole cache step from specs and a data config, on the tiny pair."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from otdistill.data import DataConfig, PairedCollator, load_paired, response_logits
from otdistill.losses import MultiLevelOTLoss
from otdistill.models import ModelSpec, load_model, load_tokenizer, resolve_model
from otdistill.teacher_cache import TeacherCache, cache_teacher_for_run, length_sorted_batches
from tests.teacher_cache.conftest import SHARED_DATA


def test_cache_step_builds_what_training_batches_need(tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    teacher, student = ModelSpec(source=str(tiny_pair[0])), ModelSpec(source=str(tiny_pair[1]))
    data = DataConfig(
        task="dialogsum", source=str(SHARED_DATA / "dialogsum"), split="validation", limit=7, max_length=256
    )
    out = tmp_path / "cache"
    result = cache_teacher_for_run(
        teacher,
        student,
        data,
        out,
        k=16,
        K_uld=32,
        shard_size=3,
        batch_size=3,
        device="cpu",
        cache_dir=str(tmp_path / "models"),
        progress=False,
    )
    t_res = resolve_model(teacher, cache_dir=tmp_path / "models")
    assert result.manifest.count == 7 and len(result.manifest.shards) == 3
    assert result.manifest.settings.teacher["revision"] == t_res.revision

    # Training side: the same data config and tokenizers give the same teacher tokens, so the cache fits.
    s_res = resolve_model(student, cache_dir=tmp_path / "models")
    t_tok: Any = load_tokenizer(t_res)
    s_tok: Any = load_tokenizer(s_res)
    split = load_paired(data, t_tok, s_tok, progress=False)
    batches = length_sorted_batches(split.features, PairedCollator.from_tokenizers(t_tok, s_tok), 3)
    widths = [int(b.teacher.input_ids.shape[1]) for b in batches]
    assert widths == sorted(widths)  # length-sorted: little padding
    cache = TeacherCache(out)
    loss_fn = MultiLevelOTLoss(top_k=16)
    cache.check_compatible(loss_fn, teacher_revision=t_res.revision)
    t_model, s_model = load_model(t_res).eval(), load_model(s_res).eval()
    for batch in batches:
        with torch.no_grad():
            t = response_logits(
                t_model(
                    input_ids=batch.teacher.input_ids, attention_mask=batch.teacher.attention_mask
                ).logits,
                batch.teacher,
            )
            s = response_logits(
                s_model(
                    input_ids=batch.student.input_ids, attention_mask=batch.student.attention_mask
                ).logits,
                batch.student,
            )
        cached = cache.for_batch(batch)
        live = loss_fn(s, t, batch.student.response_mask, batch.teacher.response_mask)
        from_cache = loss_fn(s, cached.topk, batch.student.response_mask, cached.mask)
        assert torch.equal(live.loss, from_cache.loss) and torch.equal(live.sd, from_cache.sd)


def test_length_sorted_batches_rejects_bad_size() -> None:
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        length_sorted_batches([], PairedCollator(0, 0), 0)


def test_device_and_dtype_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    """CUDA when there is one; "auto" is bfloat16 only on a CUDA device that supports it."""
    from otdistill.teacher_cache.step import run_device_and_dtype

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert run_device_and_dtype() == ("cpu", "float32")
    assert run_device_and_dtype("cpu", "bfloat16") == ("cpu", "bfloat16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert run_device_and_dtype() == ("cuda", "float32")  # e.g. a V100 or T4
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert run_device_and_dtype("cuda:1") == ("cuda:1", "bfloat16")
