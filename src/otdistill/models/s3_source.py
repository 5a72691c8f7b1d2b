"""S3 sources: a Hugging Face model directory under ``s3://bucket/prefix``, downloaded once.

Credentials come from the environment (the usual boto3 chain: AWS_ACCESS_KEY_ID..., IRSA on EKS); the
endpoint from the spec or ``AWS_ENDPOINT_URL`` (MinIO, Ceph). The cache entry is keyed by the prefix and
every object's key and ETag, so a changed object means a new download, and an unchanged prefix is a cache
hit that costs one listing. Pickled weights (``*.bin``, ``*.pt``...) are never downloaded.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from otdistill.models.cache import publish_once, read_marker
from otdistill.models.spec import ModelSourceError
from otdistill.progress import progress_bar as tqdm

logger = logging.getLogger(__name__)

UNSAFE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (``bucket``, ``some/prefix``)."""
    if not uri.startswith("s3://"):
        raise ModelSourceError(f"not an s3:// URI: {uri!r}")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ModelSourceError(f"s3 URI has no bucket: {uri!r}")
    return bucket, prefix.strip("/")


def s3_client(endpoint_url: str | None = None) -> Any:
    """A boto3 S3 client: endpoint from the argument, else env AWS_ENDPOINT_URL, else AWS."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None)


def list_objects(client: Any, bucket: str, prefix: str) -> list[tuple[str, str, int]]:
    """(key, etag, size) of every object under the prefix (treated as a directory), sorted by key."""
    out = []
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix + "/" if prefix else ""):
        for obj in page.get("Contents", []):
            out.append((obj["Key"], str(obj["ETag"]).strip('"'), int(obj["Size"])))
    return sorted(out)


def download_s3_model(uri: str, cache_root: Path, endpoint_url: str | None) -> tuple[Path, str]:
    """Download the model directory under `uri` into the cache (once); return (local dir, content key)."""
    bucket, prefix = split_s3_uri(uri)
    client = s3_client(endpoint_url)
    objects = list_objects(client, bucket, prefix)
    wanted = [o for o in objects if not o[0].endswith("/") and not o[0].lower().endswith(UNSAFE_SUFFIXES)]
    skipped = [o[0] for o in objects if o not in wanted and not o[0].endswith("/")]
    if skipped:
        logger.warning("not downloading pickled weight files from %s: %s", uri, ", ".join(skipped))
    if not wanted:
        raise ModelSourceError(f"no model files under {uri} (found {len(objects)} objects)")
    digest = hashlib.sha256(f"s3://{bucket}/{prefix}\n".encode())
    base = prefix + "/" if prefix else ""
    for key, etag, size in wanted:
        digest.update(f"{key[len(base) :]}\0{etag}\0{size}\n".encode())
    content_key = digest.hexdigest()
    target = cache_root / "models" / f"s3-{content_key[:32]}"
    if read_marker(target) is not None:
        return target, content_key

    def build(tmp: Path) -> None:
        total = sum(o[2] for o in wanted)
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {uri}") as bar:
            for key, _etag, _size in wanted:
                rel = key[len(base) :]
                if ".." in Path(rel).parts:
                    raise ModelSourceError(f"refusing S3 key with '..' in its path: {key}")
                dest = tmp / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, key, str(dest), Callback=bar.update)

    publish_once(target, build, {"source": uri, "content_key": content_key})
    return target, content_key
