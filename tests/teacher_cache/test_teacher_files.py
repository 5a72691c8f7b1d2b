"""What a cache artifact carries of its teacher (`teacher_files`): the tokenizer, loading back with the
digest the cache records, and the record (source, revision) a distillation without the teacher model uses."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from otdistill.data import DataConfig
from otdistill.models import ModelSpec, load_tokenizer, resolve_model
from otdistill.teacher_cache import TeacherCacheError, cache_teacher_for_run, tokenizer_sha256
from otdistill.teacher_cache.teacher_files import TEACHER_TOKENIZER, cached_teacher, save_teacher_tokenizer
from tests.teacher_cache.conftest import SHARED_DATA


def test_the_cache_carries_the_teacher_a_distillation_needs(
    tiny_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    models = str(tmp_path / "models")
    teacher = resolve_model(ModelSpec(source=str(tiny_pair[0])), cache_dir=models)
    data = DataConfig(
        task="dialogsum", source=str(SHARED_DATA / "dialogsum"), split="validation", limit=2, max_length=128
    )
    out = tmp_path / "cache"
    result = cache_teacher_for_run(
        teacher, ModelSpec(source=str(tiny_pair[1])), data, out, k=4, K_uld=8, device="cpu",
        cache_dir=models, progress=False,
    )  # fmt: skip
    digest = result.manifest.settings.teacher_tokenizer_sha256
    with pytest.raises(TeacherCacheError, match=f"holds no {TEACHER_TOKENIZER}/"):
        cached_teacher(out)  # a cache from before the tokenizer was carried

    save_teacher_tokenizer(teacher, out, digest)
    seen = cached_teacher(out)
    assert (seen.source, seen.revision, seen.kind) == (teacher.source, teacher.revision, teacher.kind)
    assert seen.path == out / TEACHER_TOKENIZER and tokenizer_sha256(load_tokenizer(seen)) == digest

    other = tmp_path / "other"
    shutil.copytree(out, other)
    with pytest.raises(TeacherCacheError, match="does not load back .* as the tokenizer the cache was built"):
        save_teacher_tokenizer(teacher, other, "0" * 64)
