"""Read a teacher cache: verify its checksums, then serve padded teacher batches that fit PairedBatches."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from otdistill.data import PairedBatch
from otdistill.losses import MultiLevelOTLoss, TeacherSortedProbs, TeacherTopK
from otdistill.teacher_cache.format import (
    MANIFEST,
    Manifest,
    ShardInfo,
    TeacherCacheError,
    check_shard_tensors,
)
from otdistill.teacher_cache.identity import CacheIdentity
from otdistill.teacher_cache.storage import open_store, sha256_file

logger = logging.getLogger(__name__)

# CacheIdentity's fields and how an error names them.
_IDENTITY_FIELDS = (
    ("data_sha256", "training data content hash"),
    ("teacher_tokenizer_sha256", "teacher tokenizer"),
    ("student_tokenizer_sha256", "student tokenizer"),
)


@dataclass(frozen=True)
class CachedTeacherBatch:
    """The teacher's side of a batch, from the cache: inputs for MultiLevelOTLoss / ULDLoss and the mask.

    topk.probs / topk.probs_sd / sorted.probs are zero on padded positions; mask (B, L) bool is True on
    each example's response positions (a prefix), like `SideBatch.response_mask`.
    """

    topk: TeacherTopK
    sorted: TeacherSortedProbs
    mask: Tensor


class TeacherCache:
    """A complete teacher cache at a local directory or ``s3://`` URI.

    Opening reads the manifest and, with verify=True (the default), checks every shard's sha256: a
    corrupted or truncated shard raises `TeacherCacheError` naming it. Shards are then loaded on first use
    and kept in memory (`max_shards_in_memory` most recently used). S3 shards are read from local copies in
    `local_dir` (default: ``<OTDISTILL_CACHE or ~/.cache/otdistill>/teacher-cache/<hash of the URI>``).
    """

    def __init__(
        self,
        uri: str | os.PathLike[str],
        verify: bool = True,
        endpoint_url: str | None = None,
        max_shards_in_memory: int = 8,
        local_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.store = open_store(uri, endpoint_url, Path(local_dir) if local_dir is not None else None)
        self.uri = self.store.uri
        text = self.store.read_text(MANIFEST)
        if text is None:
            raise TeacherCacheError(
                f"{self.uri} has no {MANIFEST}: not a teacher cache, or its build did not finish"
            )
        self.manifest = Manifest.from_json(text, f"{self.uri}/{MANIFEST}")
        self._where: dict[str, tuple[int, int]] = {}
        for s_index, shard in enumerate(self.manifest.shards):
            for e_index, example_id in enumerate(shard.example_ids):
                self._where[example_id] = (s_index, e_index)
        self._paths: dict[int, Path] = {}
        self._loaded: dict[int, dict[str, Tensor]] = {}
        self._max_loaded = max(1, max_shards_in_memory)
        if verify:
            for s_index in range(len(self.manifest.shards)):
                self._path(s_index, verify=True)

    # -- settings -------------------------------------------------------------------------------------
    @property
    def k(self) -> int:
        return self.manifest.settings.k

    @property
    def top_uld(self) -> int:
        return self.manifest.settings.top_uld

    @property
    def temperatures(self) -> tuple[float, float]:
        s = self.manifest.settings
        return s.temperature, s.sinkhorn_temperature

    @property
    def vocab_size(self) -> int:
        return self.manifest.vocab_size

    @property
    def teacher(self) -> dict[str, str]:
        """The record of the teacher that built the cache (source, revision...)."""
        return dict(self.manifest.settings.teacher)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, example_id: object) -> bool:
        return example_id in self._where

    def check_compatible(self, loss: object, teacher_revision: str | None = None) -> None:
        """Refuse, with a clear error, a cache that cannot serve `loss` (a registered loss that reads the
        cache, `otdistill.losses.registry`) exactly as configured.

        MultiLevelOT needs the same two temperatures and at least min(top_k, teacher vocab) columns. ULD
        works with any K (approximately when K < the teacher vocabulary; see docs/teacher_cache.md). When
        teacher_revision is given, it must be the revision the cache was built from.
        """
        if isinstance(loss, MultiLevelOTLoss):
            wanted = (float(loss.temperature), float(loss.sinkhorn_temperature))
            if wanted != self.temperatures:
                raise TeacherCacheError(
                    f"teacher cache {self.uri} was built at (temperature, sinkhorn_temperature) = "
                    f"{self.temperatures}, the loss is configured with {wanted}; rebuild the cache"
                )
            needed = min(loss.top_k, self.vocab_size)
            if self.k < needed:
                raise TeacherCacheError(
                    f"teacher cache {self.uri} holds top-{self.k} teacher probabilities, the loss uses "
                    f"top_k={loss.top_k}; rebuild the cache with k >= {needed}"
                )
        built_from = self.manifest.settings.teacher.get("revision")
        if teacher_revision is not None and built_from is not None and teacher_revision != built_from:
            raise TeacherCacheError(
                f"teacher cache {self.uri} was built from teacher revision {built_from}, "
                f"this run's teacher is {teacher_revision}"
            )

    @property
    def identity(self) -> CacheIdentity:
        """The data hash and tokenizer digests the cache was built for ("" where the build was not told)."""
        s = self.manifest.settings
        return CacheIdentity(s.data_sha256, s.teacher_tokenizer_sha256, s.student_tokenizer_sha256)

    def check_matches(
        self,
        *,
        k: int | None = None,
        temperatures: tuple[float, float] | None = None,
        identity: CacheIdentity | None = None,
    ) -> None:
        """Refuse a cache that was not built for this run, naming every difference with both values.

        A run's cache step and its training read one configuration, so k, both temperatures, the training
        split's content hash and both tokenizers must be equal to what the cache recorded; any difference
        means the cache belongs to another configuration, other data or another tokenisation (a stale
        cache URI, a changed config), and training on it would be silently wrong. Unlike
        `check_compatible`, which lets a library caller use a smaller top_k from a larger cache, k must be
        equal here. Values the run cannot tell ("" in `identity`, e.g. training on a bare list of examples)
        are not compared; a cache built without an identity is accepted with a warning, as it cannot be
        checked.
        """
        s = self.manifest.settings
        differences: list[str] = []
        if k is not None and int(k) != s.k:
            differences.append(f"k (top-k stored): cache {s.k}, run {int(k)}")
        if temperatures is not None:
            wanted = (float(temperatures[0]), float(temperatures[1]))
            if wanted != self.temperatures:
                differences.append(
                    f"(temperature, sinkhorn_temperature): cache {self.temperatures}, run {wanted}"
                )
        unverified: list[str] = []
        if identity is not None:
            cached = self.identity
            for name, label in _IDENTITY_FIELDS:
                run_value, cache_value = getattr(identity, name), getattr(cached, name)
                if not run_value:
                    continue
                if not cache_value:
                    unverified.append(name)
                elif run_value != cache_value:
                    differences.append(f"{label} ({name}): cache {cache_value}, run {run_value}")
        if differences:
            raise TeacherCacheError(
                f"teacher cache {self.uri} was not built for this run:\n  "
                + "\n  ".join(differences)
                + "\nRebuild it from this run's data, tokenizers and loss settings (the cache_teacher "
                "step), or point the run at the cache built for them."
            )
        if unverified:
            logger.warning(
                "teacher cache %s does not record %s (built without an identity): it cannot be checked "
                "against this run's data and tokenizers",
                self.uri,
                ", ".join(unverified),
            )

    # -- shards ---------------------------------------------------------------------------------------
    def _path(self, s_index: int, verify: bool) -> Path:
        if s_index in self._paths:
            return self._paths[s_index]
        info: ShardInfo = self.manifest.shards[s_index]
        try:
            path = self.store.local_copy(info.file, info.sha256)
        except FileNotFoundError as err:
            raise TeacherCacheError(str(err)) from err
        if verify:
            actual = sha256_file(path)
            if actual != info.sha256:
                raise TeacherCacheError(
                    f"teacher cache {self.uri}: shard {info.file} is corrupt (sha256 {actual}, the manifest "
                    f"says {info.sha256}); rebuild it (a resumed build recomputes only bad shards)"
                )
        self._paths[s_index] = path
        return path

    def _shard(self, s_index: int) -> dict[str, Tensor]:
        if s_index in self._loaded:
            tensors = self._loaded.pop(s_index)
            self._loaded[s_index] = tensors  # most recently used last
            return tensors
        info = self.manifest.shards[s_index]
        try:
            tensors = load_file(str(self._path(s_index, verify=True)))
        except SafetensorError as err:
            raise TeacherCacheError(
                f"teacher cache {self.uri}: shard {info.file} is unreadable: {err}"
            ) from err
        check_shard_tensors(tensors, self.manifest, s_index, f"teacher cache {self.uri}")
        if len(self._loaded) >= self._max_loaded:
            self._loaded.pop(next(iter(self._loaded)))
        self._loaded[s_index] = tensors
        return tensors

    def example(self, example_id: str) -> dict[str, Tensor]:
        """One example's stored tensors: indices (k,), probs / probs_sd (n, k), sorted (n, K)."""
        try:
            s_index, e_index = self._where[example_id]
        except KeyError:
            raise KeyError(
                f"example {example_id!r} is not in teacher cache {self.uri} ({len(self)} examples); "
                "was the cache built from the same training data?"
            ) from None
        t = self._shard(s_index)
        start, end = int(t["offsets"][e_index]), int(t["offsets"][e_index + 1])
        return {
            "indices": t["indices"][e_index],
            "probs": t["probs"][start:end],
            "probs_sd": t["probs_sd"][start:end],
            "sorted": t["sorted"][start:end],
        }

    # -- batches --------------------------------------------------------------------------------------
    def batch(
        self, example_ids: list[str], device: str | torch.device | None = None, length: int | None = None
    ) -> CachedTeacherBatch:
        """Padded teacher tensors for these examples, in this order; padded to `length` (default: longest)."""
        rows = [self.example(i) for i in example_ids]
        longest = max((r["probs"].shape[0] for r in rows), default=0)
        L = longest if length is None else length
        if longest > L:
            raise TeacherCacheError(f"cannot pad cached teacher rows of length {longest} to {L}")
        B, k, K = len(rows), self.k, self.top_uld
        indices = torch.zeros((B, k), dtype=torch.long)
        probs = torch.zeros((B, L, k), dtype=torch.float32)
        probs_sd = torch.zeros((B, L, k), dtype=torch.float32)
        sorted_probs = torch.zeros((B, L, rows[0]["sorted"].shape[-1] if rows else K), dtype=torch.float32)
        mask = torch.zeros((B, L), dtype=torch.bool)
        for b, r in enumerate(rows):
            n = r["probs"].shape[0]
            indices[b] = r["indices"]
            probs[b, :n] = r["probs"]
            probs_sd[b, :n] = r["probs_sd"]
            sorted_probs[b, :n] = r["sorted"]
            mask[b, :n] = True
        s = self.manifest.settings
        topk = TeacherTopK(
            _to(indices, device),
            _to(probs, device),
            _to(probs_sd, device),
            self.vocab_size,
            s.temperature,
            s.sinkhorn_temperature,
        )
        sorted_t = TeacherSortedProbs(_to(sorted_probs, device), self.vocab_size)
        return CachedTeacherBatch(topk, sorted_t, _to(mask, device))

    def for_batch(self, batch: PairedBatch, device: str | torch.device | None = None) -> CachedTeacherBatch:
        """The cached teacher side of `batch`, padded like its teacher side, lengths checked against it.

        A length mismatch means the cache was built from a different tokenisation (another teacher
        tokenizer, another max_length): it raises naming the example instead of training on misaligned data.
        """
        width = int(batch.teacher.response_mask.shape[1])
        cached = self.batch(batch.example_ids, device, length=width)
        want = batch.teacher.response_mask.sum(dim=1).cpu()
        have = cached.mask.sum(dim=1).cpu()
        bad = (want != have).nonzero().flatten().tolist()
        if bad:
            b = bad[0]
            raise TeacherCacheError(
                f"example {batch.example_ids[b]!r}: the teacher cache {self.uri} holds {int(have[b])} "
                f"response positions, the batch's teacher side has {int(want[b])}; the cache was built from "
                "a different tokenisation of the data"
            )
        return cached


def _to(t: Tensor, device: str | torch.device | None) -> Tensor:
    return t if device is None else t.to(device)
