"""Issue 14 vector 1: an S3 model source whose object keys would land outside the model cache is refused
(real S3 API: moto server on 127.0.0.1), and nothing is downloaded anywhere."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from otdistill.models import ModelSpec, resolve_model
from otdistill.safe_paths import UnsafePathError

pytestmark = pytest.mark.servers


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("kind", ["doubled-slash", "dot-dot"])
def test_s3_key_outside_the_model_directory_is_refused(s3_env: str, tmp_path: Path, kind: str) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_env)
    bucket = f"evil-models-{kind}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="m/config.json", Body=b"{}")
    s3.put_object(Bucket=bucket, Key="m/model.safetensors", Body=b"weights")
    target = tmp_path / "outside" / "planted.txt"  # where the key would have been written
    # `m//<absolute path>` loses its prefix to an absolute path; `m/a/../../../outside/...` climbs out of
    # the cache entry (models/s3-<hex>/) and the cache root.
    bad_key = f"m/{target}" if kind == "doubled-slash" else "m/a/../../../outside/planted.txt"
    s3.put_object(Bucket=bucket, Key=bad_key, Body=b"planted")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert bad_key in keys  # stored and listed literally, as a hostile bucket would serve it

    cache = tmp_path / "cache"
    name = str(target)[1:] if kind == "doubled-slash" else "a/../../../outside/planted.txt"
    with pytest.raises(UnsafePathError, match=rf"'/?{name}'.*(absolute|'\.\.' part)"):
        resolve_model(ModelSpec(source=f"s3://{bucket}/m"), cache_dir=cache)
    assert not target.exists()
    assert _files(tmp_path) == []  # not the good files either: every key is checked before any download
