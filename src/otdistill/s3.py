"""S3 (and S3-compatible stores: MinIO, Ceph) for every part that reads or writes a bucket: one URI parser,
one client factory, one listing and one download into a local directory.

Data sources, S3 model sources, checkpoint mirrors and teacher caches all name a location as
``s3://bucket/prefix``, where the prefix is a directory: listing ``s3://b/model`` never returns
``s3://b/model-2/...``. Credentials come from the usual boto3 chain (AWS_ACCESS_KEY_ID..., IRSA on EKS) and
are never logged; the endpoint from the caller, else ``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``.

Downloads write only under the directory they are given: an object key is whatever the bucket's writers
chose, so each local name goes through `otdistill.safe_paths.confined`, and every name of a download is
checked before the first byte is fetched (a refused key leaves nothing on disk).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from otdistill.safe_paths import confined


class S3UriError(ValueError):
    """A string meant as an ``s3://bucket/prefix`` URI is not one."""


@dataclass(frozen=True)
class S3Uri:
    """``s3://bucket/prefix``: the bucket and the prefix without leading or trailing slashes."""

    bucket: str
    prefix: str

    def key(self, *parts: str) -> str:
        """The object key of `parts` under the prefix (empty parts skipped)."""
        return "/".join(p for p in (self.prefix, *parts) if p)

    @property
    def directory(self) -> str:
        """The prefix as a listing prefix: ``prefix/``, or ``""`` for the whole bucket."""
        return self.prefix + "/" if self.prefix else ""

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def parse_s3_uri(uri: str) -> S3Uri:
    """``s3://bucket/some/prefix/`` -> S3Uri("bucket", "some/prefix"); anything else is an `S3UriError`."""
    if not uri.startswith("s3://"):
        raise S3UriError(f"not an s3:// URI: {uri!r}")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not bucket:
        raise S3UriError(f"s3 URI {uri!r} has no bucket")
    return S3Uri(bucket, prefix.strip("/"))


def s3_client(endpoint_url: str | None = None) -> Any:
    """A boto3 S3 client; endpoint from the argument, else env AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL."""
    import boto3

    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return boto3.client("s3", endpoint_url=endpoint or None)


@dataclass(frozen=True)
class S3Object:
    """One listed object."""

    key: str
    etag: str
    size: int


def list_objects(client: Any, bucket: str, prefix: str) -> list[S3Object]:
    """Every object under `prefix` (a directory: ``prefix/...``; ``""`` is the whole bucket), by key."""
    directory = prefix.strip("/") + "/" if prefix.strip("/") else ""
    found = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=directory):
        for obj in page.get("Contents", []):
            found.append(S3Object(obj["Key"], str(obj["ETag"]).strip('"'), int(obj["Size"])))
    return sorted(found, key=lambda o: o.key)


def relative_key(key: str, prefix: str) -> str:
    """`key` without the directory `prefix` (which it must be under); not checked: see `download_files`."""
    directory = prefix.strip("/") + "/" if prefix.strip("/") else ""
    if not key.startswith(directory):
        raise ValueError(f"object key {key!r} is not under the prefix {prefix!r}")
    return key[len(directory) :]


def download_files(
    client: Any,
    bucket: str,
    files: Mapping[str, str],
    root: Path,
    callback: Callable[[int], object] | None = None,
) -> list[Path]:
    """Download each ``{local name: object key}`` to ``root/<local name>``; return the local paths.

    Every local name is confined to `root` (`UnsafePathError` on an empty, absolute, ``..``, backslash or
    NUL part, or a path that resolves outside) before anything is downloaded.
    """
    targets = [(confined(root, name), key) for name, key in files.items()]
    for dest, key in targets:
        dest.parent.mkdir(parents=True, exist_ok=True)
        extra = {"Callback": callback} if callback is not None else {}
        client.download_file(bucket, key, str(dest), **extra)
    return [dest for dest, _ in targets]


def download_objects(
    client: Any,
    bucket: str,
    prefix: str,
    objects: Sequence[S3Object],
    root: Path,
    callback: Callable[[int], object] | None = None,
) -> list[Path]:
    """Download `objects` (listed under `prefix`) into `root`, each at its key relative to the prefix."""
    files = {relative_key(o.key, prefix): o.key for o in objects}
    return download_files(client, bucket, files, root, callback)
