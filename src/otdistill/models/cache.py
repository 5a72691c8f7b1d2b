"""The local model cache: where it is, content hashes, and publishing a directory atomically under a lock.

Converting a GGUF model or downloading an S3 prefix happens once per content hash. Two processes (two
pipeline pods on one node, two tests) may try at the same time, so the work is done under a file lock, into
a temporary directory next to the target, which is then renamed into place: readers only ever see a
complete directory or none.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from filelock import FileLock

logger = logging.getLogger(__name__)

_CHUNK = 8 * 1024 * 1024
COMPLETE_MARKER = ".otdistill-complete.json"


def default_cache_dir(configured: str | os.PathLike[str] | None = None) -> Path:
    """The cache root: the configured value, else env ``OTDISTILL_CACHE``, else ``~/.cache/otdistill``."""
    if configured:
        return Path(configured).expanduser()
    env = os.environ.get("OTDISTILL_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "otdistill"


def sha256_stream(paths: Iterable[Path]) -> str:
    """sha256 of the concatenation of the given files, read in order (GGUF parts concatenate)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            while block := fh.read(_CHUNK):
                digest.update(block)
    return digest.hexdigest()


def sha256_files_memo(paths: list[Path], cache_root: Path) -> str:
    """`sha256_stream` memoised by (path, size, mtime) in the cache, so a re-resolve costs no re-read.

    Installed package files and user files do not change in place without their mtime changing; if they do,
    the memo key changes and the hash is recomputed.
    """
    key_parts = []
    for p in paths:
        st = p.stat()
        key_parts.append(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}")
    key = hashlib.sha256("\n".join(key_parts).encode()).hexdigest()
    memo = cache_root / "hashes" / f"{key}.sha256"
    if memo.is_file():
        value = memo.read_text().strip()
        if len(value) == 64:
            return value
    value = sha256_stream(paths)
    memo.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(value + "\n")
    os.replace(tmp, memo)
    return value


def directory_sha256(root: Path, cache_root: Path) -> str:
    """Content hash of a directory: sha256 over sorted (relative path, file sha256) pairs.

    Each file's hash is memoised (model weights are large). Hidden files (our own markers, lock files,
    ``.git``) are not part of a model's content and are skipped.
    """
    digest = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if not p.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        digest.update(rel.as_posix().encode() + b"\0" + sha256_files_memo([p], cache_root).encode() + b"\n")
    return digest.hexdigest()


def read_marker(target: Path) -> dict[str, str] | None:
    """The provenance a published cache entry was written with, or None if the entry is absent/incomplete."""
    marker = target / COMPLETE_MARKER
    if not marker.is_file():
        return None
    data = json.loads(marker.read_text())
    return {str(k): str(v) for k, v in data.items()}


def publish_once(target: Path, build: Callable[[Path], None], provenance: dict[str, str]) -> Path:
    """Make `target` exist exactly once: build it into a temp dir under a lock, then rename it into place.

    `build(tmp_dir)` writes the content. If another process published `target` while we waited for the lock,
    nothing is built. A failed build leaves no partial directory behind.
    """
    if read_marker(target) is not None:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(target) + ".lock")
    with lock:
        if read_marker(target) is not None:
            logger.info("cache entry %s was published by another process", target)
            return target
        if target.exists():  # an incomplete entry from a crashed older layout: rebuild it
            shutil.rmtree(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            build(tmp)
            (tmp / COMPLETE_MARKER).write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target
