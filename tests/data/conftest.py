"""Fixtures for the data tests: the real shared task files, tokenizers of the tiny pair, a real S3 server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.models.s3_server import s3_credentials, s3_endpoint

__all__ = ["s3_credentials", "s3_endpoint"]

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "dialogsum" / "validation.jsonl").is_file():
        pytest.fail(f"the shared task data is missing at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_tokenizers(tiny_pair: tuple[Path, Path]) -> tuple[Any, Any]:
    """(teacher_tokenizer, student_tokenizer) of the tiny pair: Gemma-like Unigram + <bos>, ChatML BPE."""
    from transformers import AutoTokenizer

    teacher_dir, student_dir = tiny_pair
    return AutoTokenizer.from_pretrained(teacher_dir), AutoTokenizer.from_pretrained(student_dir)
