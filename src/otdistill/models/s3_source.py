"""S3 sources: a Hugging Face model directory under ``s3://bucket/prefix``, downloaded once.

Credentials and endpoint: `otdistill.s3` (the endpoint may also come from the spec). The cache entry is
keyed by the prefix and every object's key and ETag, so a changed object means a new download, and an
unchanged prefix is a cache hit that costs one listing. Pickled weights (``*.bin``, ``*.pt``...) are never
downloaded. Object keys are confined to the cache entry (`otdistill.safe_paths`): a key such as
``prefix//etc/x`` or ``prefix/../x`` raises `UnsafePathError` before anything is downloaded.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from otdistill.models.cache import publish_once, read_marker
from otdistill.models.spec import ModelSourceError
from otdistill.progress import progress_bar as tqdm
from otdistill.s3 import S3UriError, download_objects, list_objects, parse_s3_uri, relative_key, s3_client
from otdistill.safe_paths import safe_relative

logger = logging.getLogger(__name__)

UNSAFE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def download_s3_model(uri: str, cache_root: Path, endpoint_url: str | None) -> tuple[Path, str]:
    """Download the model directory under `uri` into the cache (once); return (local dir, content key)."""
    try:
        location = parse_s3_uri(uri)
    except S3UriError as exc:
        raise ModelSourceError(str(exc)) from exc
    bucket, prefix = location.bucket, location.prefix
    client = s3_client(endpoint_url)
    objects = list_objects(client, bucket, prefix)
    files = [o for o in objects if not o.key.endswith("/")]
    wanted = [o for o in files if not o.key.lower().endswith(UNSAFE_SUFFIXES)]
    skipped = [o.key for o in files if o not in wanted]
    if skipped:
        logger.warning("not downloading pickled weight files from %s: %s", uri, ", ".join(skipped))
    if not wanted:
        raise ModelSourceError(f"no model files under {uri} (found {len(objects)} objects)")
    digest = hashlib.sha256(f"s3://{bucket}/{prefix}\n".encode())
    for obj in wanted:
        digest.update(f"{relative_key(obj.key, prefix)}\0{obj.etag}\0{obj.size}\n".encode())
    content_key = digest.hexdigest()
    target = cache_root / "models" / f"s3-{content_key[:32]}"
    for obj in wanted:  # refused before the cache entry (its lock, its temporary directory) is touched
        safe_relative(relative_key(obj.key, prefix), target)
    if read_marker(target) is not None:
        return target, content_key

    def build(tmp: Path) -> None:
        total = sum(o.size for o in wanted)
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {uri}") as bar:
            download_objects(client, bucket, prefix, wanted, tmp, callback=bar.update)

    publish_once(target, build, {"source": uri, "content_key": content_key})
    return target, content_key
