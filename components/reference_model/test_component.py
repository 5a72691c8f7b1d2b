"""reference_model: records a model used as is; the consumers resolve it back to the same revision."""

from pathlib import Path

from otdistill.components.conftest import Upstream
from otdistill.models import ModelSpec, resolve_model
from otdistill.steps.common import resolve_model_artifact


def test_reference_resolves_to_the_configured_model(upstream: Upstream, tiny_pair: tuple[Path, Path]) -> None:
    teacher_dir, _ = tiny_pair
    assert upstream.teacher.metadata["role"] == "teacher"
    assert upstream.teacher.metadata["kind"] == "reference"
    resolved = resolve_model_artifact(upstream.teacher.path)
    assert resolved.revision == resolve_model(ModelSpec(source=str(teacher_dir))).revision
    assert not list(Path(upstream.teacher.path).glob("*.safetensors"))  # no weights copied
