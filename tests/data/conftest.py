"""Fixtures for the data tests: the real shared task files, tokenizers of the tiny pair, a real S3 server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A real S3 API (moto in server mode, in a thread) on a free 127.0.0.1 port; boto3 talks HTTP to it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials in the environment, where boto3 finds them (as a pod finds its real ones)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
