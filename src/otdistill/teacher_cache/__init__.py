"""Teacher top-k cache: run the teacher once, store what the losses need, train without the teacher.

    from otdistill.teacher_cache import build_teacher_cache, TeacherCache
    build_teacher_cache(teacher, batches, "s3://bucket/caches/run1", k=50, K_uld=256,
                        temperatures=(1.0, 2.0), shard_size=1024, teacher=resolved.record())
    cache = TeacherCache("s3://bucket/caches/run1")      # verifies every shard's sha256
    cache.check_compatible(loss)                         # refuses a k / temperature mismatch
    cache.check_matches(k=50, temperatures=(1.0, 2.0),   # refuses a cache of other data / tokenizers
                        identity=CacheIdentity.of(split.report.content_sha256, t_tok, s_tok))
    t = cache.for_batch(paired_batch, device)            # TeacherTopK, TeacherSortedProbs, mask
    loss(student_logits, t.topk, student_mask, t.mask)

The whole cache step of a run (resolve, tokenise as training will, build) is `cache_teacher_for_run`; the
pipeline's `cache_teacher` component calls it through `otdistill.teacher_cache.step.cache_teacher_step`.
Format and the ULD approximation: docs/teacher_cache.md.
"""

from typing import TYPE_CHECKING

from otdistill.lazy import lazy_exports

if TYPE_CHECKING:
    from otdistill.teacher_cache.builder import BuildResult, build_teacher_cache
    from otdistill.teacher_cache.format import CacheSettings, Manifest, ShardInfo, TeacherCacheError
    from otdistill.teacher_cache.identity import CacheIdentity, tokenizer_sha256
    from otdistill.teacher_cache.reader import CachedTeacherBatch, TeacherCache
    from otdistill.teacher_cache.step import cache_teacher_for_run, length_sorted_batches

__all__ = [
    "BuildResult",
    "CacheIdentity",
    "CacheSettings",
    "CachedTeacherBatch",
    "Manifest",
    "ShardInfo",
    "TeacherCache",
    "TeacherCacheError",
    "build_teacher_cache",
    "cache_teacher_for_run",
    "length_sorted_batches",
    "tokenizer_sha256",
]

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(__name__, __file__, __all__)
