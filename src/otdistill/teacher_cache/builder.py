"""Run the teacher once over the training set and store what the distillation losses need from it.

For MultiLevelOT the stored values are exact (they are `MultiLevelOTLoss.teacher_topk`'s output, per
example, unpadded); for ULD the top-K sorted probabilities are stored, which makes ULD approximate when K is
smaller than the teacher vocabulary (docs/teacher_cache.md). The per-sequence top-k ranking only looks at an
example's own valid positions, so how examples are batched does not change what is stored.

Resumable: shards are numbered by example position; a shard whose file and sidecar are present and whose
checksum verifies is not recomputed (a batch whose examples all fall in finished shards skips the teacher).
The manifest is written last.
"""

from __future__ import annotations

import inspect
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from otdistill.data import PairedBatch, SideBatch, response_logits
from otdistill.losses import MultiLevelOTLoss, teacher_sorted_probs
from otdistill.progress import progress_bar as tqdm
from otdistill.teacher_cache.format import (
    BUILD,
    FORMAT,
    MANIFEST,
    CacheSettings,
    Manifest,
    ShardInfo,
    TeacherCacheError,
    json_object,
    shard_name,
    sidecar_name,
)
from otdistill.teacher_cache.identity import CacheIdentity
from otdistill.teacher_cache.storage import CacheStore, open_store, sha256_file

logger = logging.getLogger(__name__)


@dataclass
class _Pending:
    """Examples of the shard being filled, as CPU tensors, unpadded."""

    ids: list[str] = field(default_factory=list)
    indices: list[Tensor] = field(default_factory=list)
    probs: list[Tensor] = field(default_factory=list)
    probs_sd: list[Tensor] = field(default_factory=list)
    sorted: list[Tensor] = field(default_factory=list)


@dataclass(frozen=True)
class BuildResult:
    """What a build did: the manifest, and how many shards were computed vs found finished."""

    manifest: Manifest
    shards_written: int
    shards_skipped: int
    uri: str


def _finished_shards(store: CacheStore, settings: CacheSettings) -> dict[int, ShardInfo]:
    """Shards of an interrupted build with the same settings whose sidecar reads and checksum verifies."""
    previous = store.read_text(BUILD)
    if previous is None:
        return {}
    old = CacheSettings.from_json(previous, f"{store.uri}/{BUILD}")
    if old != settings:
        differ = "; ".join(old.differences(settings))
        raise TeacherCacheError(
            f"{store.uri} holds a teacher cache built with different settings (earlier build vs this "
            f"one: {differ}). Use another output location or delete the old cache."
        )
    done: dict[int, ShardInfo] = {}
    index = 0
    while (text := store.read_text(sidecar_name(index))) is not None:
        where = f"{store.uri}/{sidecar_name(index)}"
        try:
            data = json_object(text, where)
        except TeacherCacheError as err:
            # torn (e.g. a node lost power before the renamed file reached the disk): like a shard that
            # does not verify, it is rebuilt, so that a retried step recovers on its own
            logger.warning("%s; shard %d will be rebuilt", err, index)
            index += 1
            continue
        info = ShardInfo.from_dict(data, where, index=index)
        try:
            path = store.local_copy(info.file, info.sha256)
            ok = sha256_file(path) == info.sha256
        except FileNotFoundError:
            ok = False
        if ok:
            done[index] = info
        else:
            logger.warning("shard %s of %s does not verify; it will be rebuilt", info.file, store.uri)
        index += 1
    return done


def _teacher_response_logits(model: torch.nn.Module, side: SideBatch) -> Tensor:
    """(B, R, V) teacher logits at the response positions, computing the LM head only where needed.

    A prompt is usually much longer than its response (a dialogue and its summary), and the teacher's
    vocabulary is large (262,144 for Gemma-3): full (B, L, V) logits would be most of the memory. Models
    that take `logits_to_keep` (transformers causal LMs) get the window of positions that hold responses;
    others are run in full.
    """
    valid = side.response_mask
    if not bool(valid.any()):
        logits = model(input_ids=side.input_ids, attention_mask=side.attention_mask).logits
        return response_logits(logits, side)
    lo = int(side.response_positions[valid].min())
    hi = int(side.response_positions[valid].max())
    forward_params = inspect.signature(model.forward).parameters
    if "logits_to_keep" not in forward_params:
        logits = model(input_ids=side.input_ids, attention_mask=side.attention_mask).logits
        return response_logits(logits, side)
    keep = torch.arange(lo, hi + 1, device=side.input_ids.device)
    logits = model(input_ids=side.input_ids, attention_mask=side.attention_mask, logits_to_keep=keep).logits
    if logits.shape[1] != keep.numel():
        raise TeacherCacheError(
            f"the teacher ignored logits_to_keep: {logits.shape[1]} positions, expected {keep.numel()}"
        )
    window = replace(side, response_positions=(side.response_positions - lo).clamp(min=0))
    return response_logits(logits, window)


def _write_shard(store: CacheStore, index: int, pending: _Pending, settings: CacheSettings) -> ShardInfo:
    lengths = torch.tensor([p.shape[0] for p in pending.probs], dtype=torch.long)
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.long)
    offsets[1:] = torch.cumsum(lengths, 0)
    tensors = {
        "indices": torch.stack(pending.indices).to(torch.int64).contiguous(),
        "probs": torch.cat(pending.probs).to(torch.float32).contiguous(),
        "probs_sd": torch.cat(pending.probs_sd).to(torch.float32).contiguous(),
        "sorted": torch.cat(pending.sorted).to(torch.float32).contiguous(),
        "offsets": offsets,
    }
    import json

    # One metadata key: safetensors writes its metadata map in arbitrary order, and the same examples
    # should always give the same bytes (and checksum).
    metadata = {"otdistill": json.dumps({"format": FORMAT, "example_ids": pending.ids})}
    with tempfile.TemporaryDirectory(prefix="otdistill-shard-") as tmp:
        local = Path(tmp) / shard_name(index)
        save_file(tensors, str(local), metadata=metadata)
        info = ShardInfo(shard_name(index), sha256_file(local), list(pending.ids), int(offsets[-1]))
        store.put_file(info.file, local)
    store.write_text(sidecar_name(index), info.to_json())
    return info


def build_teacher_cache(
    model: torch.nn.Module,
    batches: Iterable[PairedBatch],
    out_uri: str | os.PathLike[str],
    k: int = 50,
    K_uld: int = 256,  # noqa: N803 - the K of ULD in docs/interfaces.md and the paper
    temperatures: tuple[float, float] = (1.0, 2.0),
    shard_size: int = 1024,
    teacher: Mapping[str, str] | None = None,
    endpoint_url: str | None = None,
    total_batches: int | None = None,
    progress: bool = True,
    identity: CacheIdentity | None = None,
) -> BuildResult:
    """Run `model` (the teacher) over `batches` and write a teacher cache to `out_uri` (dir or s3://).

    k: MultiLevelOT top-k stored (the loss may use any top_k <= k); K_uld: sorted probabilities stored
    for ULD; temperatures: (temperature, sinkhorn_temperature) of the MultiLevelOT loss; teacher: the
    resolved teacher's record (source, revision...), stored in the manifest; identity: the data's content
    hash and both tokenizers' digests (`CacheIdentity.of(split.report.content_sha256, t_tok, s_tok)`),
    stored in the settings so that training can refuse a cache of other data or tokenisation
    (`TeacherCache.check_matches`); without it the cache cannot be verified against a run's data. The
    batches must come in the same order on a resumed build (checked against the finished shards' example
    ids), with the same settings and identity (checked against build.json).
    """
    if k < 1 or K_uld < 1 or shard_size < 1:
        raise ValueError(f"k, K_uld and shard_size must be >= 1, got {k}, {K_uld}, {shard_size}")
    tau, tau_sd = (float(t) for t in temperatures)
    ident = identity or CacheIdentity()
    settings = CacheSettings(
        k,
        K_uld,
        tau,
        tau_sd,
        shard_size,
        dict(teacher or {}),
        data_sha256=ident.data_sha256,
        teacher_tokenizer_sha256=ident.teacher_tokenizer_sha256,
        student_tokenizer_sha256=ident.student_tokenizer_sha256,
    )
    store = open_store(out_uri, endpoint_url)
    if identity is None:
        logger.warning(
            "teacher cache %s is built without a data/tokenizer identity: training cannot check that it "
            "belongs to its data and tokenizers (pass identity=CacheIdentity.of(...))",
            store.uri,
        )
    finished = _finished_shards(store, settings)
    if finished:
        logger.info("resuming %s: %d finished shards verified", store.uri, len(finished))
    store.write_text(BUILD, settings.to_json())

    topk_fn = MultiLevelOTLoss(top_k=k, temperature=tau, sinkhorn_temperature=tau_sd)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    shards: dict[int, ShardInfo] = dict(finished)
    pending = _Pending()
    position = 0
    vocab_size: int | None = None
    seen: set[str] = set()
    bar = tqdm(batches, total=total_batches, desc="teacher cache", unit="batch", disable=not progress)
    try:
        for batch in bar:
            n = len(batch.example_ids)
            first, last = position // shard_size, (position + n - 1) // shard_size
            for offset, example_id in enumerate(batch.example_ids):
                if example_id in seen:
                    raise TeacherCacheError(f"example id {example_id!r} appears twice in the batches")
                seen.add(example_id)
                shard = (position + offset) // shard_size
                if shard in finished:
                    slot = (position + offset) % shard_size
                    held = finished[shard].example_ids
                    expected = held[slot] if slot < len(held) else None
                    if expected != example_id:
                        raise TeacherCacheError(
                            f"resuming {store.uri}: example {position + offset} is {example_id!r} but "
                            f"finished shard {finished[shard].file} holds {expected!r} there; the batches "
                            "must come in the same order as in the interrupted build"
                        )
            if all(s in finished for s in range(first, last + 1)):
                position += n
                continue
            side = batch.teacher.to(device)
            with torch.no_grad():
                t_logits = _teacher_response_logits(model, side)
                mask = side.response_mask
                vocab_size = int(t_logits.shape[-1])
                topk = topk_fn.teacher_topk(t_logits, mask)
                sorted_probs = teacher_sorted_probs(t_logits, K_uld).probs
            del t_logits
            lengths = mask.sum(dim=1).tolist()
            for b, example_id in enumerate(batch.example_ids):
                shard = position // shard_size
                position += 1
                if shard in finished:
                    continue
                length = int(lengths[b])
                pending.ids.append(example_id)
                pending.indices.append(topk.indices[b].cpu())
                pending.probs.append(topk.probs[b, :length].cpu())
                pending.probs_sd.append(topk.probs_sd[b, :length].cpu())
                pending.sorted.append(sorted_probs[b, :length].cpu())
                if len(pending.ids) == shard_size:
                    shards[shard] = _write_shard(store, shard, pending, settings)
                    pending = _Pending()
        if pending.ids:
            shard = (position - 1) // shard_size
            shards[shard] = _write_shard(store, shard, pending, settings)
    finally:
        bar.close()
        model.train(was_training)

    if not shards:
        raise TeacherCacheError("no examples were given to the teacher cache builder")
    expected_count = len(shards)
    if sorted(shards) != list(range(expected_count)):
        raise TeacherCacheError(
            f"{store.uri}: shards {sorted(set(range(max(shards) + 1)) - set(shards))} are missing; "
            "the batches ended before the finished shards of an earlier build"
        )
    if vocab_size is None:
        vocab_size = _vocab_from_previous(store, model)
    manifest = Manifest(settings, vocab_size, [shards[i] for i in range(expected_count)])
    if manifest.count != position:
        raise TeacherCacheError(
            f"{store.uri}: the batches held {position} examples but the shards hold {manifest.count}; "
            "finished shards of an earlier build do not match this data"
        )
    store.write_text(MANIFEST, manifest.to_json())
    written = expected_count - len(finished)
    logger.info(
        "teacher cache %s: %d examples in %d shards (%d reused)",
        store.uri,
        manifest.count,
        expected_count,
        len(finished),
    )
    return BuildResult(manifest, written, len(finished), store.uri)


def _vocab_from_previous(store: CacheStore, model: Any) -> int:
    """Vocabulary size when every shard was reused (no teacher forward ran): from the model's config."""
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab is None:
        raise TeacherCacheError(f"{store.uri}: cannot tell the teacher's vocabulary size")
    return int(vocab)
