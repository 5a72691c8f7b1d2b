"""Suite-wide settings for tests/ and components/*/: offline hub, no telemetry, two torch threads, the tiny
model pair. At the repository root so that pytest puts the root on sys.path (the `tests` helpers import as
`tests.*`) and both test trees share it; the installed product needs none of this."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(teacher_dir, student_dir): a tiny Gemma-like teacher and SmolLM2-like student, random weights."""
    from tests.tiny_models import make_tiny_pair

    return make_tiny_pair(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(autouse=True)
def _isolate_mlflow_state() -> object:
    """Each test starts with MLflow's process-global URIs and env as the suite found them."""
    from tests.tracking.mlflow_state import restore_mlflow_state

    with restore_mlflow_state():
        yield
