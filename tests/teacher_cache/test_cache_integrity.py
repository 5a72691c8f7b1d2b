"""Checksums, resume, refusal of mismatched caches, and an S3 round trip on a real S3 API (moto)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import torch

from otdistill.data import PairedBatch, SideBatch
from otdistill.losses import MultiLevelOTLoss
from otdistill.teacher_cache import BuildResult, TeacherCache, TeacherCacheError, build_teacher_cache
from tests.teacher_cache.conftest import TinySetup


class PreemptedError(RuntimeError):
    pass


def _crashing(batches: list[PairedBatch], after: int) -> Iterator[PairedBatch]:
    """Yield `after` batches, then fail as a preempted pod would."""
    for n, batch in enumerate(batches):
        if n == after:
            raise PreemptedError("preempted")
        yield batch


def _build(setup: TinySetup, batches: Iterable[PairedBatch], out: Path | str, **kw: Any) -> BuildResult:
    """build_teacher_cache with the small settings these tests use unless overridden."""
    settings: dict[str, Any] = {"k": 8, "K_uld": 8, "shard_size": 4, "progress": False, **kw}
    return build_teacher_cache(setup.teacher, batches, out, **settings)


def _count_forwards(model: torch.nn.Module) -> tuple[list[int], torch.utils.hooks.RemovableHandle]:
    calls = [0]

    def hook(*_: object) -> None:
        calls[0] += 1

    return calls, model.register_forward_hook(hook)


def test_corrupted_shard_is_detected_and_named(tiny_setup: TinySetup, tmp_path: Path) -> None:
    _build(tiny_setup, tiny_setup.batches(4), tmp_path)
    TeacherCache(tmp_path)  # intact: opens
    shard = tmp_path / "shard-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF  # one flipped bit pattern in the tensor data
    shard.write_bytes(bytes(data))
    with pytest.raises(TeacherCacheError, match=r"shard shard-00001\.safetensors is corrupt"):
        TeacherCache(tmp_path)
    shard.unlink()
    with pytest.raises(TeacherCacheError, match=r"shard-00001\.safetensors is missing"):
        TeacherCache(tmp_path)


def test_resume_skips_finished_shards_and_rebuilds_bad_ones(tiny_setup: TinySetup, tmp_path: Path) -> None:
    batches = tiny_setup.batches(2)  # 6 batches; shard_size 4 -> shards of examples 0-3, 4-7, 8-10
    reference = _build(tiny_setup, batches, tmp_path / "ref").manifest

    out = tmp_path / "resumed"
    with pytest.raises(PreemptedError):
        _build(tiny_setup, _crashing(batches, 5), out)
    assert not (out / "manifest.json").exists()
    assert sorted(p.name for p in out.glob("shard-*.json")) == ["shard-00000.json", "shard-00001.json"]
    with pytest.raises(TeacherCacheError, match="has no manifest.json"):
        TeacherCache(out)

    calls, handle = _count_forwards(tiny_setup.teacher)
    try:
        result = _build(tiny_setup, batches, out)
    finally:
        handle.remove()
    assert (result.shards_skipped, result.shards_written) == (2, 1)
    assert calls[0] == 2  # only the two batches of the unfinished last shard ran through the teacher
    assert [s.sha256 for s in result.manifest.shards] == [s.sha256 for s in reference.shards]

    # A shard that no longer verifies is recomputed on the next build.
    bad = out / "shard-00000.safetensors"
    bad.write_bytes(bad.read_bytes()[:-10])
    result = _build(tiny_setup, batches, out)
    assert (result.shards_skipped, result.shards_written) == (2, 1)
    assert TeacherCache(out).manifest.shards[0].sha256 == reference.shards[0].sha256


def test_resume_refuses_other_settings_or_order(tiny_setup: TinySetup, tmp_path: Path) -> None:
    batches = tiny_setup.batches(4)
    _build(tiny_setup, batches, tmp_path)
    with pytest.raises(TeacherCacheError, match="built with different settings"):
        _build(tiny_setup, batches, tmp_path, k=16)
    with pytest.raises(TeacherCacheError, match="must come in the same order"):
        _build(tiny_setup, list(reversed(batches)), tmp_path)


def test_cache_refuses_a_mismatched_loss_or_data(tiny_setup: TinySetup, tmp_path: Path) -> None:
    batches = tiny_setup.batches(4)
    teacher = {"revision": "sha256:abc"}
    _build(tiny_setup, batches, tmp_path, temperatures=(1.0, 2.0), shard_size=8, teacher=teacher)
    cache = TeacherCache(tmp_path)
    assert len(cache) == 11 and cache.k == 8 and cache.temperatures == (1.0, 2.0)
    cache.check_compatible(MultiLevelOTLoss(top_k=8))
    with pytest.raises(TeacherCacheError, match=r"built at .* = \(1.0, 2.0\)"):
        cache.check_compatible(MultiLevelOTLoss(top_k=8, sinkhorn_temperature=3.0))
    with pytest.raises(TeacherCacheError, match="holds top-8 .* top_k=50"):
        cache.check_compatible(MultiLevelOTLoss(top_k=50))
    with pytest.raises(TeacherCacheError, match="teacher revision sha256:abc"):
        cache.check_compatible(MultiLevelOTLoss(top_k=8), teacher_revision="sha256:other")

    with pytest.raises(KeyError, match="'no-such-id' is not in teacher cache"):
        cache.batch(["no-such-id"])
    batch = batches[0]
    mask = batch.teacher.response_mask.clone()
    mask[1, int(mask[1].sum()) - 1] = False  # as if the data had been tokenised differently
    other = PairedBatch(
        batch.example_ids,
        SideBatch(
            batch.teacher.input_ids,
            batch.teacher.attention_mask,
            batch.teacher.labels,
            batch.teacher.response_positions,
            mask,
        ),
        batch.student,
    )
    with pytest.raises(TeacherCacheError, match=f"{batch.example_ids[1]!r}: .* different tokenisation"):
        cache.for_batch(other)


def test_manifest_records_checksums_and_teacher(tiny_setup: TinySetup, tmp_path: Path) -> None:
    record = tiny_setup.teacher_resolved.record()
    _build(tiny_setup, tiny_setup.batches(4), tmp_path, K_uld=4, shard_size=6, teacher=record)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["count"] == 11 and manifest["vocab_size"] == tiny_setup.teacher_vocab_size
    assert manifest["settings"]["teacher"]["revision"] == record["revision"]
    assert [s["file"] for s in manifest["shards"]] == ["shard-00000.safetensors", "shard-00001.safetensors"]
    assert all(len(s["sha256"]) == 64 for s in manifest["shards"])


@pytest.mark.servers
def test_s3_round_trip(
    tiny_setup: TinySetup, tmp_path: Path, s3_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTDISTILL_CACHE", str(tmp_path / "local"))
    boto3.client("s3", endpoint_url=s3_env).create_bucket(Bucket="caches")
    batches = tiny_setup.batches(4)
    uri = "s3://caches/runs/r1/teacher"
    result = _build(tiny_setup, batches, uri, k=12, K_uld=16, shard_size=5)
    keys = sorted(
        o["Key"]
        for o in boto3.client("s3", endpoint_url=s3_env).list_objects_v2(
            Bucket="caches", Prefix="runs/r1/teacher/"
        )["Contents"]
    )
    assert "runs/r1/teacher/manifest.json" in keys and "runs/r1/teacher/shard-00002.safetensors" in keys

    remote = TeacherCache(uri)
    local_dir = tmp_path / "ref"
    _build(tiny_setup, batches, local_dir, k=12, K_uld=16, shard_size=5)
    local = TeacherCache(local_dir)
    assert [s.sha256 for s in remote.manifest.shards] == [s.sha256 for s in result.manifest.shards]
    for batch in batches:
        a, b = remote.for_batch(batch), local.for_batch(batch)
        assert torch.equal(a.topk.probs, b.topk.probs) and torch.equal(a.topk.indices, b.topk.indices)
        assert torch.equal(a.sorted.probs, b.sorted.probs) and torch.equal(a.mask, b.mask)

    # Resuming against S3 skips what is there.
    again = _build(tiny_setup, batches, uri, k=12, K_uld=16, shard_size=5)
    assert (again.shards_skipped, again.shards_written) == (3, 0)
