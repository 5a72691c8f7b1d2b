"""`otdistill.s3`, the one S3 module: URI parsing, listing as a directory, and downloads that stay in
their root, against a real S3 API (moto server on 127.0.0.1)."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from otdistill.s3 import (
    S3Uri,
    S3UriError,
    download_files,
    download_objects,
    list_objects,
    parse_s3_uri,
    s3_client,
)
from otdistill.safe_paths import UnsafePathError


def test_parse_s3_uri() -> None:
    assert parse_s3_uri("s3://bucket/some/prefix/") == S3Uri("bucket", "some/prefix")
    assert parse_s3_uri("s3://bucket") == S3Uri("bucket", "")
    uri = parse_s3_uri("s3://b/p")
    assert uri.key("checkpoint-2", "x.json") == "p/checkpoint-2/x.json" and uri.directory == "p/"
    assert str(uri) == "s3://b/p" and S3Uri("b", "").directory == "" and S3Uri("b", "").key("x") == "x"
    with pytest.raises(S3UriError, match="not an s3:// URI"):
        parse_s3_uri("gs://bucket/x")
    with pytest.raises(S3UriError, match="has no bucket"):
        parse_s3_uri("s3:///x")


@pytest.mark.servers
def test_list_is_a_directory_and_download_stays_in_its_root(s3_env: str, tmp_path: Path) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_env)
    s3.create_bucket(Bucket="lib")
    for key in ("m/a.json", "m/sub/b.json", "m-other/c.json"):
        s3.put_object(Bucket="lib", Key=key, Body=key.encode())
    client = s3_client()
    objects = list_objects(client, "lib", "m")
    assert [o.key for o in objects] == ["m/a.json", "m/sub/b.json"]  # not m-other/
    assert [o.size for o in objects] == [8, 12] and all(len(o.etag) == 32 for o in objects)

    root = tmp_path / "root"
    paths = download_objects(client, "lib", "m", objects, root)
    assert paths == [root / "a.json", root / "sub" / "b.json"]
    assert (root / "sub" / "b.json").read_bytes() == b"m/sub/b.json"

    # One bad name among good ones: refused before the first download, so nothing at all is written.
    fresh = tmp_path / "fresh"
    with pytest.raises(UnsafePathError, match=r"'\.\./escaped\.json'"):
        download_files(client, "lib", {"a.json": "m/a.json", "../escaped.json": "m/a.json"}, fresh)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]
