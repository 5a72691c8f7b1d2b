"""What a teacher cache artifact carries of its teacher, so that a distillation reading the cache never
downloads the teacher model (on a cluster, KFP's launcher copies every input artifact in full before a
step starts: a 7B teacher is 15-27 GB).

Distillation from the cache needs of the teacher only: its tokenizer (the cross-tokenizer alignment, and
the cache's identity check, `TeacherCache.check_matches`), written next to the shards in
`teacher_tokenizer/`; and its record (source, revision: lineage and the checkpoint fingerprint), which
the manifest already holds (`CacheSettings.teacher`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, cast

from otdistill.models import ResolvedModel, load_tokenizer
from otdistill.models.spec import SourceKind
from otdistill.teacher_cache.format import MANIFEST, Manifest, TeacherCacheError
from otdistill.teacher_cache.identity import tokenizer_sha256

TEACHER_TOKENIZER = "teacher_tokenizer"


def save_teacher_tokenizer(teacher: ResolvedModel, cache_dir: Path, expected_sha256: str) -> Path:
    """Write `teacher`'s tokenizer files into `cache_dir`/teacher_tokenizer and check that they load
    back as the tokenizer the cache was built with (`expected_sha256`: the manifest's digest), so a
    distillation that reads them tokenises exactly as the cache did. Returns the directory."""
    target = cache_dir / TEACHER_TOKENIZER
    tokenizer: Any = load_tokenizer(teacher)
    tokenizer.save_pretrained(str(target))
    reloaded = load_tokenizer(dataclasses.replace(teacher, path=target, gguf_file=None))
    if tokenizer_sha256(reloaded) != expected_sha256:
        raise TeacherCacheError(
            f"{target}: the teacher tokenizer of {teacher.source} does not load back from its saved files "
            f"as the tokenizer the cache was built with (digest {tokenizer_sha256(reloaded)}, expected "
            f"{expected_sha256}); distillation from this cache would tokenise differently"
        )
    return target


def cached_teacher(cache_dir: str | Path) -> ResolvedModel:
    """The teacher as a distillation reading the cache at `cache_dir` sees it: its tokenizer directory,
    with the source, kind and revision the manifest recorded (no weights: only a live teacher needs
    them). A cache written before the tokenizer was carried is refused by name."""
    cache_dir = Path(cache_dir)
    manifest_path = cache_dir / MANIFEST
    if not manifest_path.is_file():
        raise TeacherCacheError(f"{cache_dir} is not a teacher cache: it has no {MANIFEST}")
    manifest = Manifest.from_json(manifest_path.read_text(encoding="utf-8"), str(manifest_path))
    record = manifest.settings.teacher
    tokenizer = cache_dir / TEACHER_TOKENIZER
    if not tokenizer.is_dir():
        raise TeacherCacheError(
            f"{cache_dir} holds no {TEACHER_TOKENIZER}/ (a cache built before it carried the teacher's "
            "tokenizer): rebuild it with the cache_teacher step"
        )
    missing = [key for key in ("source", "kind", "revision") if not record.get(key)]
    if missing:
        raise TeacherCacheError(f"{manifest_path}: settings.teacher has no {', '.join(missing)}")
    return ResolvedModel(
        path=tokenizer,
        source=record["source"],
        kind=cast(SourceKind, record["kind"]),
        revision=record["revision"],
        trust_remote_code=record.get("trust_remote_code") == "True",
    )
