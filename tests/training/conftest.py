"""Fixtures for the training tests: real DialogSum examples, small configs, job files for subprocesses."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from otdistill.data import DataConfig, Example, load_examples
from otdistill.training import TrainConfig
from tests.models.s3_server import s3_credentials, s3_endpoint, s3_env

__all__ = ["s3_credentials", "s3_endpoint", "s3_env"]

REPO = Path(__file__).resolve().parents[2]
DIALOGSUM = REPO.parent / "shared" / "data" / "dialogsum"
MAX_LENGTH = 256


def data_config(limit: int = 16) -> DataConfig:
    return DataConfig(
        task="dialogsum", source=str(DIALOGSUM), split="train", limit=limit, max_length=MAX_LENGTH
    )


@pytest.fixture(scope="session")
def examples() -> list[Example]:
    """16 real DialogSum training examples."""
    return load_examples(data_config(), progress=False).examples


def tiny_config(output_dir: Path, **overrides: Any) -> TrainConfig:
    """A few steps on the tiny pair: batch 2, constant-free cosine schedule, checkpoints every 2 steps."""
    values: dict[str, Any] = {
        "output_dir": str(output_dir),
        "max_steps": 4,
        "per_device_batch_size": 2,
        "learning_rate": 1e-3,
        "logging_steps": 1,
        "save_steps": 2,
        "warmup_steps": 0,
        "progress_bar": False,
        "resume": False,
    }
    values.update(overrides)
    return TrainConfig(**values)


def write_job(path: Path, stage: str, train: TrainConfig, student: Path | None, teacher: Path | None) -> Path:
    """A job file for `python -m otdistill.training` on the same 16 examples as the `examples` fixture."""
    job = {
        "stage": stage,
        "train": train.to_dict(),
        "data": data_config().to_dict(),
        "student": str(student) if student else None,
        "teacher": str(teacher) if teacher else None,
    }
    path.write_text(yaml.safe_dump(job), encoding="utf-8")
    return path


def subprocess_env(threads: int = 2) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        MLFLOW_DISABLE_TELEMETRY="true",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS=str(threads),
        PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO), env.get("PYTHONPATH", "")]),
    )
    return env
