"""The loss computed from the teacher cache equals the loss computed from live teacher logits.

MultiLevelOT: exactly (every part: HAD, SL, SD and the total). ULD: exact when K covers the teacher
vocabulary; otherwise within the documented bound, the teacher's tail mass beyond K averaged over the
aligned positions (docs/teacher_cache.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from otdistill.data import PairedBatch, response_logits
from otdistill.losses import MultiLevelOTLoss, ULDLoss
from otdistill.teacher_cache import TeacherCache, build_teacher_cache
from tests.teacher_cache.conftest import TinySetup


def _live(setup: TinySetup, batch: PairedBatch) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        t = setup.teacher(input_ids=batch.teacher.input_ids, attention_mask=batch.teacher.attention_mask)
        s = setup.student(input_ids=batch.student.input_ids, attention_mask=batch.student.attention_mask)
    return response_logits(t.logits, batch.teacher), response_logits(s.logits, batch.student)


@pytest.fixture(scope="module")
def built(tiny_setup: TinySetup, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tcache") / "cache"
    result = build_teacher_cache(
        tiny_setup.teacher,
        tiny_setup.batches(4),
        out,
        k=50,
        K_uld=64,
        temperatures=(1.0, 2.0),
        shard_size=5,  # batches of 4 straddle shard boundaries
        teacher=tiny_setup.teacher_resolved.record(),
        progress=False,
    )
    assert result.manifest.count == 11 and len(result.manifest.shards) == 3
    assert result.shards_written == 3 and result.shards_skipped == 0
    return out


def test_multilevelot_from_cache_equals_live_exactly(tiny_setup: TinySetup, built: Path) -> None:
    cache = TeacherCache(built)
    assert cache.teacher["revision"] == tiny_setup.teacher_resolved.revision
    loss_fn = MultiLevelOTLoss(top_k=50)
    cache.check_compatible(loss_fn, teacher_revision=tiny_setup.teacher_resolved.revision)
    for batch in tiny_setup.batches(4):  # the same batching as the build: bit-identical teacher logits
        t_logits, s_logits = _live(tiny_setup, batch)
        cached = cache.for_batch(batch)
        assert torch.equal(cached.mask, batch.teacher.response_mask)
        live = loss_fn(s_logits, t_logits, batch.student.response_mask, batch.teacher.response_mask)
        from_cache = loss_fn(s_logits, cached.topk, batch.student.response_mask, cached.mask)
        for part in ("had", "sl", "sd", "loss"):
            assert torch.equal(getattr(live, part), getattr(from_cache, part)), part
        assert live.sd > 0 and live.had > 0  # a real comparison, not of zeros


def test_multilevelot_smaller_top_k_and_other_batching(tiny_setup: TinySetup, built: Path) -> None:
    """A loss with top_k below the cached k uses the leading columns; regrouped batches change nothing
    in the cache (the teacher forward of a differently padded batch may differ in the last float bits)."""
    cache = TeacherCache(built)
    loss_fn = MultiLevelOTLoss(top_k=20)
    cache.check_compatible(loss_fn)
    for batch in tiny_setup.batches(3):
        t_logits, s_logits = _live(tiny_setup, batch)
        cached = cache.for_batch(batch)
        live = loss_fn(s_logits, t_logits, batch.student.response_mask, batch.teacher.response_mask)
        from_cache = loss_fn(s_logits, cached.topk, batch.student.response_mask, cached.mask)
        for part in ("had", "sl", "sd", "loss"):
            torch.testing.assert_close(getattr(from_cache, part), getattr(live, part), rtol=1e-5, atol=1e-6)


def test_uld_from_cache_within_the_teacher_tail_bound(tiny_setup: TinySetup, built: Path) -> None:
    cache = TeacherCache(built)
    uld = ULDLoss(weight=0.15)
    worst_gap = 0.0
    for batch in tiny_setup.batches(4):
        t_logits, s_logits = _live(tiny_setup, batch)
        cached = cache.for_batch(batch)
        s_mask, t_mask = batch.student.response_mask, batch.teacher.response_mask
        live = uld(s_logits, t_logits, s_mask, t_mask)
        approx = uld(s_logits, cached.sorted, s_mask, cached.mask)
        # Bound: per aligned position, |approx - exact| <= teacher mass beyond the K cached probabilities.
        m = torch.minimum(s_mask.sum(1), t_mask.sum(1))
        aligned = torch.arange(cached.mask.shape[1]).unsqueeze(0) < m.unsqueeze(1)
        tail = (1.0 - cached.sorted.probs.sum(-1)).clamp(min=0)
        bound = (tail * aligned).sum() / aligned.sum()
        gap = float((approx.uld - live.uld).abs())
        assert gap <= float(bound) + 1e-6, (gap, float(bound))
        assert float(bound) > 0  # K=64 < 600: this cache really is approximate
        worst_gap = max(worst_gap, gap)
    assert worst_gap > 0


def test_uld_exact_when_k_covers_the_vocabulary(tiny_setup: TinySetup, tmp_path: Path) -> None:
    batches = tiny_setup.batches(6)
    vocab = tiny_setup.teacher_vocab_size
    build_teacher_cache(tiny_setup.teacher, batches, tmp_path, k=10, K_uld=vocab + 5, progress=False)
    cache = TeacherCache(tmp_path)
    uld = ULDLoss()
    for batch in batches:
        t_logits, s_logits = _live(tiny_setup, batch)
        cached = cache.for_batch(batch)
        assert cached.sorted.probs.shape[-1] == vocab
        live = uld(s_logits, t_logits, batch.student.response_mask, batch.teacher.response_mask)
        approx = uld(s_logits, cached.sorted, batch.student.response_mask, cached.mask)
        torch.testing.assert_close(approx.uld, live.uld, rtol=1e-6, atol=1e-7)


def test_bfloat16_teacher_is_cached_in_float32_and_still_exact(tiny_setup: TinySetup, tmp_path: Path) -> None:
    """GPU runs load the teacher in bfloat16; the stored probabilities are float32 softmaxes of its logits."""
    import copy

    teacher16 = copy.deepcopy(tiny_setup.teacher).to(torch.bfloat16)
    batches = tiny_setup.batches(4)
    build_teacher_cache(teacher16, batches, tmp_path, k=50, K_uld=16, shard_size=6, progress=False)
    cache = TeacherCache(tmp_path)
    loss_fn = MultiLevelOTLoss(top_k=50)
    for batch in batches:
        with torch.no_grad():
            out = teacher16(input_ids=batch.teacher.input_ids, attention_mask=batch.teacher.attention_mask)
        t_logits = response_logits(out.logits, batch.teacher)
        assert t_logits.dtype == torch.bfloat16
        _, s_logits = _live(tiny_setup, batch)
        cached = cache.for_batch(batch, device="cpu")
        assert cached.topk.probs.dtype == torch.float32 and cached.sorted.probs.dtype == torch.float32
        live = loss_fn(s_logits, t_logits, batch.student.response_mask, batch.teacher.response_mask)
        from_cache = loss_fn(s_logits, cached.topk, batch.student.response_mask, cached.mask)
        assert torch.equal(live.loss, from_cache.loss) and torch.equal(live.sd, from_cache.sd)
