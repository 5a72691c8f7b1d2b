"""S3 model sources against a real S3 API (moto server on 127.0.0.1)."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from otdistill.models import ModelSourceError, ModelSpec, load_model, load_tokenizer, resolve_model
from otdistill.models.cache import COMPLETE_MARKER

pytestmark = pytest.mark.servers


def _upload_dir(endpoint: str, bucket: str, prefix: str, root: Path) -> None:
    s3 = boto3.client("s3", endpoint_url=endpoint)
    if bucket not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
        s3.create_bucket(Bucket=bucket)
    for p in sorted(root.rglob("*")):
        if p.is_file():
            s3.upload_file(str(p), bucket, f"{prefix}/{p.relative_to(root).as_posix()}")


def test_s3_prefix_downloads_once_and_tracks_etags(
    tiny_pair: tuple[Path, Path], tmp_path: Path, s3_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, student_dir = tiny_pair
    _upload_dir(s3_env, "models", "students/tiny", student_dir)
    s3 = boto3.client("s3", endpoint_url=s3_env)
    s3.put_object(Bucket="models", Key="students/tiny/pytorch_model.bin", Body=b"pickle, never loaded")
    # A sibling prefix that shares the string prefix must not leak in.
    s3.put_object(Bucket="models", Key="students/tiny-other/config.json", Body=b"{}")

    spec = ModelSpec(source="s3://models/students/tiny")
    resolved = resolve_model(spec, cache_dir=tmp_path)
    assert resolved.kind == "s3" and resolved.revision.startswith("sha256:")
    downloaded = sorted(p.name for p in resolved.path.iterdir() if not p.name.startswith("."))
    expected = sorted(p.name for p in student_dir.iterdir())
    assert downloaded == expected  # no pytorch_model.bin, nothing from tiny-other
    tok = load_tokenizer(resolved)
    assert tok.chat_template is not None and tok.eos_token == "<|im_end|>"
    assert load_model(resolved).config.vocab_size == len(tok)

    marker_mtime = (resolved.path / COMPLETE_MARKER).stat().st_mtime_ns
    again = resolve_model(spec, cache_dir=tmp_path)
    assert again == resolved
    assert (again.path / COMPLETE_MARKER).stat().st_mtime_ns == marker_mtime  # not downloaded again

    s3.put_object(Bucket="models", Key="students/tiny/generation_config.json", Body=b'{"max_new_tokens": 3}')
    changed = resolve_model(spec, cache_dir=tmp_path)
    assert changed.revision != resolved.revision and changed.path != resolved.path
    assert (changed.path / "generation_config.json").read_text() == '{"max_new_tokens": 3}'

    # The endpoint can come from the spec instead of the environment.
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    explicit = resolve_model(ModelSpec(source=spec.source, s3_endpoint_url=s3_env), cache_dir=tmp_path)
    assert explicit == changed


def test_empty_s3_prefix_is_a_clear_error(tmp_path: Path, s3_env: str) -> None:
    boto3.client("s3", endpoint_url=s3_env).create_bucket(Bucket="empty")
    with pytest.raises(ModelSourceError, match=r"no model files under s3://empty/nothing"):
        resolve_model(ModelSpec(source="s3://empty/nothing"), cache_dir=tmp_path)
