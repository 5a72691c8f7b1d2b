"""cache_teacher: the teacher's top-k for every training example, readable by the training's cache reader."""

import json
from pathlib import Path

from otdistill.components.conftest import Upstream
from otdistill.teacher_cache import TeacherCache


def test_cache_holds_every_training_example(upstream: Upstream) -> None:
    meta = upstream.cache.metadata
    assert meta["examples"] == "4" and meta["k"] == "8"
    # Built by cache_teacher_for_run: the identity of the snapshot prepare_data hashed, the teacher's record.
    assert meta["data_sha256"] == upstream.data_hash
    teacher_info = json.loads((Path(upstream.teacher.path) / "otdistill_model.json").read_text())
    assert meta["teacher_revision"] == teacher_info["revision"]
    cache = TeacherCache(upstream.cache.path)
    assert cache.k == 8 and cache.identity.data_sha256 == upstream.data_hash
