"""Issue 14 vector 4: a teacher-cache manifest or shard sidecar naming any file but the shard names the
format defines (``../x``, an absolute path) is refused before that file is read, fetched or served, on
local disk and on a real S3 API (moto server on 127.0.0.1); the stores themselves confine every name."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import boto3
import pytest
import torch

from otdistill.safe_paths import UnsafePathError
from otdistill.teacher_cache import CacheSettings, TeacherCache, TeacherCacheError, build_teacher_cache
from otdistill.teacher_cache.format import FORMAT, MANIFEST
from otdistill.teacher_cache.storage import LocalStore, S3Store

SETTINGS = CacheSettings(k=2, top_uld=2, temperature=1.0, sinkhorn_temperature=2.0, shard_size=4)


def _manifest(file: str, sha256: str) -> str:
    shard = {"file": file, "sha256": sha256, "example_ids": ["ex-0"], "positions": 1}
    return json.dumps(
        {
            "format": FORMAT,
            "settings": json.loads(SETTINGS.to_json()),
            "vocab_size": 10,
            "count": 1,
            "shards": [shard],
        }
    )


def _secret(path: Path) -> str:
    """A file outside the cache, and the sha256 a manifest would quote so that it verifies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a shard of this cache")
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("kind", ["dot-dot", "absolute"])
def test_local_manifest_naming_a_file_outside_is_refused(tmp_path: Path, kind: str) -> None:
    secret = tmp_path / "secret.safetensors"
    sha = _secret(secret)
    cache = tmp_path / "cache"
    cache.mkdir()
    name = "../secret.safetensors" if kind == "dot-dot" else str(secret)
    (cache / MANIFEST).write_text(_manifest(name, sha))
    # Unconfined, the cache opened, verified the outside file against the quoted sha256, and served it.
    with pytest.raises(TeacherCacheError, match=rf"names the file '{name}'.*'shard-00000\.safetensors'"):
        TeacherCache(cache)
    # Another shard's name at this index is not this shard either.
    (cache / MANIFEST).write_text(_manifest("shard-00001.safetensors", sha))
    with pytest.raises(TeacherCacheError, match="shard 0 names the file 'shard-00001.safetensors'"):
        TeacherCache(cache)


@pytest.mark.servers
def test_s3_manifest_naming_a_file_outside_is_refused_and_nothing_fetched(
    s3_env: str, tmp_path: Path
) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_env)
    s3.create_bucket(Bucket="evil-cache")
    secret = tmp_path / "secret.safetensors"
    sha = _secret(secret)
    local_dir = tmp_path / "shards" / "copies"
    for name in (str(secret), "../fetched.safetensors"):
        s3.put_object(Bucket="evil-cache", Key="c/manifest.json", Body=_manifest(name, sha).encode())
        s3.put_object(Bucket="evil-cache", Key=f"c/{name.lstrip('/')}", Body=b"not a shard of this cache")
        with pytest.raises(TeacherCacheError, match="the format names it 'shard-00000.safetensors'"):
            TeacherCache("s3://evil-cache/c", local_dir=local_dir)
    assert sorted(tmp_path.iterdir()) == [secret]  # no copies directory, nothing fetched beside it


def test_resumed_build_refuses_a_sidecar_naming_a_file_outside(tmp_path: Path) -> None:
    secret = tmp_path / "secret.safetensors"
    sha = _secret(secret)
    out = tmp_path / "cache"
    out.mkdir()
    (out / "build.json").write_text(SETTINGS.to_json())  # an interrupted build with these settings
    sidecar = {"file": "../secret.safetensors", "sha256": sha, "example_ids": ["ex-0"], "positions": 1}
    (out / "shard-00000.json").write_text(json.dumps(sidecar))
    # Refused while reading what the earlier build finished: before any teacher forward or write.
    with pytest.raises(TeacherCacheError, match=r"shard-00000\.json.*names the file '\.\./secret"):
        build_teacher_cache(
            torch.nn.Linear(2, 2), [], out, k=2, K_uld=2, temperatures=(1.0, 2.0), shard_size=4
        )
    assert sorted(p.name for p in out.iterdir()) == ["build.json", "shard-00000.json"]


@pytest.mark.servers
def test_stores_confine_every_name(s3_env: str, tmp_path: Path) -> None:
    boto3.client("s3", endpoint_url=s3_env).create_bucket(Bucket="store-names")
    outside = tmp_path / "outside.json"
    local = LocalStore(tmp_path / "local")
    remote = S3Store("s3://store-names/c", local_dir=tmp_path / "copies")
    for name in ("../outside.json", str(outside), "a//b", ""):
        for store in (local, remote):
            with pytest.raises(UnsafePathError):
                store.write_text(name, "{}")
            with pytest.raises(UnsafePathError):
                store.read_text(name)
            with pytest.raises(UnsafePathError):
                store.local_copy(name, None)
            with pytest.raises(UnsafePathError):
                store.delete(name)
        with pytest.raises(UnsafePathError):
            local.put_file(name, tmp_path / "nothing")
    assert list(tmp_path.iterdir()) == []
