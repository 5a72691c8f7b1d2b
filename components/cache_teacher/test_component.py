"""cache_teacher: the teacher's top-k for every training example, readable by the training's cache reader."""

from otdistill.components.conftest import Upstream
from otdistill.teacher_cache import TeacherCache


def test_cache_holds_every_training_example(upstream: Upstream) -> None:
    assert upstream.cache.metadata["examples"] == "4" and upstream.cache.metadata["k"] == "8"
    cache = TeacherCache(upstream.cache.path)
    assert cache.k == 8
