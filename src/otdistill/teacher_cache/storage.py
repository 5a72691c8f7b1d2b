"""Where a teacher cache lives: a local directory or an ``s3://bucket/prefix``, behind one small interface.

Shards are written to a local temporary file first (safetensors needs a file), checksummed, then published:
an atomic rename on local disk, one PUT on S3 (S3 objects appear whole). Readers fetch S3 shards into a
local directory once and verify them there.

Every name a store is given may come from a manifest or sidecar that someone else wrote: it is confined to
the store's directory (`otdistill.safe_paths`), so ``../x`` or ``/etc/x`` raises `UnsafePathError` before
anything is read, fetched or written. (The reader and builder also accept only the shard names the format
defines; this is the storage layer's own guard.)
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any, Protocol

from otdistill.models.cache import default_cache_dir
from otdistill.s3 import parse_s3_uri, s3_client
from otdistill.safe_paths import confined, safe_relative
from otdistill.teacher_cache.format import TeacherCacheError


def _decode(data: bytes, where: str) -> str:
    """A manifest or sidecar's text; bytes that are not UTF-8 are a corrupt cache, named as such."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise TeacherCacheError(
            f"{where} is not UTF-8 text (byte {err.start}): corrupt or not a cache file"
        ) from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(8 * 1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


class CacheStore(Protocol):
    """The few operations a teacher cache needs from its storage."""

    uri: str

    def read_text(self, name: str) -> str | None: ...
    def write_text(self, name: str, text: str) -> None: ...
    def put_file(self, name: str, local: Path) -> None: ...
    def local_copy(self, name: str, expected_sha256: str | None) -> Path: ...
    def delete(self, name: str) -> None: ...


class LocalStore:
    """A directory on local disk (or a mounted volume)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = str(root)

    def read_text(self, name: str) -> str | None:
        path = confined(self.root, name)
        return _decode(path.read_bytes(), f"{self.uri}/{name}") if path.is_file() else None

    def write_text(self, name: str, text: str) -> None:
        path = confined(self.root, name)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)

    def put_file(self, name: str, local: Path) -> None:
        path = confined(self.root, name)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        shutil.copyfile(local, tmp)
        os.replace(tmp, path)

    def local_copy(self, name: str, expected_sha256: str | None) -> Path:
        path = confined(self.root, name)
        if not path.is_file():
            raise FileNotFoundError(f"teacher cache {self.uri}: shard {name} is missing")
        return path

    def delete(self, name: str) -> None:
        confined(self.root, name).unlink(missing_ok=True)


class S3Store:
    """``s3://bucket/prefix``; shards are downloaded into ``<cache>/teacher-cache/<uri hash>/`` to be read."""

    def __init__(self, uri: str, endpoint_url: str | None = None, local_dir: Path | None = None) -> None:
        self.uri = uri.rstrip("/")
        location = parse_s3_uri(self.uri)
        self.bucket, self.prefix = location.bucket, location.prefix
        self.client: Any = s3_client(endpoint_url)
        key = hashlib.sha256(self.uri.encode()).hexdigest()[:24]
        self.local_dir = local_dir or default_cache_dir() / "teacher-cache" / key

    def _key(self, name: str) -> str:
        relative = safe_relative(name, self.uri).as_posix()
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def read_text(self, name: str) -> str | None:
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(name))["Body"].read()
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        return _decode(bytes(body), f"{self.uri}/{name}")

    def write_text(self, name: str, text: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(name), Body=text.encode("utf-8"))

    def put_file(self, name: str, local: Path) -> None:
        self.client.upload_file(str(local), self.bucket, self._key(name))

    def local_copy(self, name: str, expected_sha256: str | None) -> Path:
        dest = confined(self.local_dir, name)
        if dest.is_file() and expected_sha256 and sha256_file(dest) == expected_sha256:
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        from botocore.exceptions import ClientError

        try:
            self.client.download_file(self.bucket, self._key(name), str(tmp))
        except ClientError as err:
            raise FileNotFoundError(
                f"teacher cache {self.uri}: shard {name} cannot be fetched: {err}"
            ) from err
        os.replace(tmp, dest)
        return dest

    def delete(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(name))


def open_store(
    uri: str | os.PathLike[str], endpoint_url: str | None = None, local_dir: Path | None = None
) -> CacheStore:
    """A store for a local path or an ``s3://`` URI (whose shards are read from copies in `local_dir`)."""
    text = str(uri)
    if text.startswith("s3://"):
        return S3Store(text, endpoint_url, local_dir)
    return LocalStore(Path(text).expanduser())
