"""distill_student: distils from the cache and writes the student with its lineage metadata."""

from pathlib import Path

from transformers import AutoModelForCausalLM

from otdistill.components.conftest import Upstream


def test_distilled_student_is_a_model_with_lineage(upstream: Upstream) -> None:
    meta = upstream.distilled.metadata
    assert meta["loss"] == "multilevel_ot" and meta["kind"] == "trained"
    assert meta["teacher_revision"].startswith("sha256:")
    assert AutoModelForCausalLM.from_pretrained(Path(upstream.distilled.path)) is not None
