"""Atomic checkpoints, on local disk and mirrored to S3, and finding the one to resume from.

A checkpoint is everything the Trainer saves (weights, optimizer, scheduler, RNG states of every rank,
trainer state with the data position). It is written into `<output_dir>/.staging/checkpoint-N`, then a
manifest (`otdistill_complete.json`: every file's size and sha256) is written last, everything is fsynced,
and the directory is renamed to `<output_dir>/checkpoint-N` in one `os.rename`. A crash at any moment
leaves either no `checkpoint-N` or a complete one; a directory without a valid manifest (copied by hand,
truncated by a full disk, a partial S3 download) is never resumed from: it is skipped with a warning.

S3 mirror: files are uploaded first and the manifest last, so an S3 prefix with a manifest is complete;
resume downloads the newest complete S3 checkpoint when it is newer than the local ones, and verifies
every file against the manifest before using it. The file names a manifest lists are confined to the
checkpoint directory (`otdistill.safe_paths`): a manifest naming ``../x`` or an absolute path raises
`UnsafePathError` before anything is downloaded, and resume stops on it rather than skipping it.

Fingerprints (`otdistill.fingerprint`): a checkpoint's manifest records the fingerprint of what wrote it
(`TrainConfig.checkpoint_fingerprint`). With a fingerprint to match, resume takes only checkpoints that
record the same one. Any other complete checkpoint (another config, data or base model; or none recorded)
is refused with a warning naming both fingerprints and moved aside, locally and in S3, to
`refused-<12 hex of its fingerprint>/checkpoint-N` next to the checkpoints: kept for inspection, never
resumed, never overwritten by this run's saves nor removed by checkpoint rotation; training starts from
step 0 (or from an older checkpoint that matches).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from otdistill import fingerprint as fp
from otdistill.s3 import download_files, list_objects, parse_s3_uri, s3_client
from otdistill.safe_paths import UnsafePathError, confined, safe_relative

log = logging.getLogger(__name__)

MANIFEST = "otdistill_complete.json"
STAGING = ".staging"
REFUSED = "refused-"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint_step(path: Path | str) -> int | None:
    match = CHECKPOINT_RE.match(Path(path).name)
    return int(match.group(1)) if match else None


def write_manifest(directory: Path, step: int, fingerprint: str | None = None) -> dict[str, Any]:
    """fsync every file of `directory`, then write its manifest atomically (the last file to appear)."""
    files = {}
    for path in _files(directory):
        _fsync_path(path)
        files[path.relative_to(directory).as_posix()] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    manifest = {"step": step, "files": files, "written_at": time.time(), "fingerprint": fingerprint}
    tmp = directory / f".{MANIFEST}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, directory / MANIFEST)
    _fsync_path(directory)
    return manifest


def manifest_fingerprint(directory: Path) -> str | None:
    """The fingerprint a checkpoint's manifest records (None: none recorded, or no readable manifest)."""
    try:
        value = json.loads((directory / MANIFEST).read_text(encoding="utf-8")).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None
    return str(value) if value else None


def refusal(what: str, theirs: str | None, ours: str, kept_in: str) -> str:
    """The warning for a refused checkpoint: both fingerprints, the parts that differ, where it is kept."""
    differ = ", ".join(fp.differences(ours, theirs))
    return (
        f"refusing to resume from {what}: it records fingerprint {theirs or 'none'}, this step's is {ours} "
        f"(they differ in: {differ}); it is kept in {kept_in}, and this step starts from step 0"
    )


def set_aside(path: Path, theirs: str | None, ours: str) -> Path:
    """Refuse the checkpoint (or state directory) `path`: warn naming both fingerprints, and move it to
    `<its parent>/refused-<12 hex of theirs>/<its name>`, where nothing of this run writes or deletes."""
    target = path.parent / f"{REFUSED}{fp.short(theirs)}" / path.name
    if target.exists():
        target = target.with_name(f"{path.name}-{int(time.time())}")
    log.warning("%s", refusal(str(path), theirs, ours, str(target)))
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(path, target)
    return target


def verify_checkpoint(directory: Path, check_hashes: bool = True) -> str | None:
    """None when `directory` is a complete checkpoint; otherwise why it is not (for the warning)."""
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        return (
            "no completion manifest (the save was interrupted or the directory was not written by otdistill)"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"unreadable manifest: {exc}"
    if not files:
        return "manifest lists no files"
    for name, meta in files.items():
        path = confined(directory, name)
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != meta["size"]:
            return f"{name} has {path.stat().st_size} bytes, the manifest says {meta['size']}"
        if check_hashes and _sha256(path) != meta["sha256"]:
            return f"{name} does not match its sha256 in the manifest"
    return None


def finalize_checkpoint(staging: Path, final: Path, step: int, fingerprint: str | None = None) -> Path:
    """Manifest + fsync `staging`, then rename it to `final` (replacing an older `final`, e.g. on re-save)."""
    write_manifest(staging, step, fingerprint)
    final.parent.mkdir(parents=True, exist_ok=True)
    trash = None
    if final.exists():
        trash = final.with_name(f".trash-{final.name}-{os.getpid()}")
        os.rename(final, trash)
    os.rename(staging, final)
    _fsync_path(final.parent)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    remove_if_empty(staging.parent)
    return final


def remove_if_empty(directory: Path) -> None:
    """Remove the staging root once nothing is staged in it (another rank or save may still use it)."""
    with contextlib.suppress(OSError):
        directory.rmdir()


def clean_staging(output_dir: Path) -> None:
    """Remove what an interrupted save left behind (never a complete checkpoint: those are renamed)."""
    for leftover in [output_dir / STAGING, *output_dir.glob(".trash-checkpoint-*")]:
        if leftover.exists():
            log.warning("removing %s left by an interrupted checkpoint save", leftover)
            shutil.rmtree(leftover, ignore_errors=True)


def local_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every `checkpoint-N` directory, newest first, complete or not."""
    if not output_dir.is_dir():
        return []
    found = [(checkpoint_step(p), p) for p in output_dir.iterdir() if p.is_dir()]
    return sorted(((s, p) for s, p in found if s is not None), reverse=True)


def set_aside_foreign(output_dir: Path, fingerprint: str) -> None:
    """Refuse and move aside every complete local checkpoint that records another fingerprint."""
    for _, path in local_checkpoints(output_dir):
        if verify_checkpoint(path, check_hashes=False) is not None:
            continue  # incomplete: skipped (with its own warning) by latest_complete_checkpoint
        theirs = manifest_fingerprint(path)
        if theirs != fingerprint:
            set_aside(path, theirs, fingerprint)


def latest_complete_checkpoint(output_dir: Path, check_hashes: bool = True) -> Path | None:
    """The newest `checkpoint-N` with a valid manifest; incomplete ones are skipped with a warning."""
    for step, path in local_checkpoints(output_dir):
        problem = verify_checkpoint(path, check_hashes=check_hashes)
        if problem is None:
            return path
        log.warning("ignoring incomplete checkpoint %s (step %d): %s", path, step, problem)
    return None


class S3CheckpointStore:
    """Mirror of the checkpoints under `s3://bucket/prefix/checkpoint-N/` (MinIO etc. via `endpoint_url`)."""

    def __init__(self, uri: str, endpoint_url: str | None = None, client: Any = None) -> None:
        self.uri = uri.rstrip("/")
        self.location = parse_s3_uri(uri)
        self.client = client or s3_client(endpoint_url)

    def upload(self, checkpoint: Path) -> str:
        """Upload a finalized checkpoint: its files first, the manifest last. Returns its URI."""
        if verify_checkpoint(checkpoint, check_hashes=False) is not None:
            raise ValueError(f"refusing to upload {checkpoint}: it is not a complete checkpoint")
        name = checkpoint.name
        for path in _files(checkpoint):
            rel = path.relative_to(checkpoint).as_posix()
            self.client.upload_file(str(path), self.location.bucket, self.location.key(name, rel))
        self.client.upload_file(
            str(checkpoint / MANIFEST), self.location.bucket, self.location.key(name, MANIFEST)
        )
        return f"{self.uri}/{name}"

    def complete_steps(self) -> list[int]:
        """Steps of the checkpoints whose manifest is in S3 (uploaded last: their files are all there)."""
        steps = set()
        prefix = self.location.directory
        for key in self._keys(prefix):
            head, _, tail = key[len(prefix) :].partition("/")
            step = checkpoint_step(head)
            if step is not None and tail == MANIFEST:
                steps.add(step)
        return sorted(steps, reverse=True)

    def _keys(self, prefix: str) -> list[str]:
        return [obj.key for obj in list_objects(self.client, self.location.bucket, prefix)]

    def fingerprint(self, step: int) -> str | None:
        """The fingerprint checkpoint `step`'s manifest in S3 records (None when it records none)."""
        key = self.location.key(f"checkpoint-{step}", MANIFEST)
        body = self.client.get_object(Bucket=self.location.bucket, Key=key)["Body"].read()
        value = json.loads(body).get("fingerprint")
        return str(value) if value else None

    def set_aside(self, step: int, theirs: str | None, ours: str) -> str:
        """Refuse S3 checkpoint `step` (warning naming both fingerprints): copy it to
        `refused-<12 hex>/checkpoint-N/`, then delete the original, its manifest first."""
        name = f"checkpoint-{step}"
        source = self.location.key(name) + "/"
        target = self.location.key(f"{REFUSED}{fp.short(theirs)}", name)
        log.warning(
            "%s", refusal(f"{self.uri}/{name}", theirs, ours, f"s3://{self.location.bucket}/{target}")
        )
        keys = self._keys(source)
        for key in keys:
            self.client.copy(
                {"Bucket": self.location.bucket, "Key": key},
                self.location.bucket,
                f"{target}/{key[len(source) :]}",
            )
        manifest = source + MANIFEST
        for key in sorted(keys, key=lambda k: k != manifest):  # no longer complete before anything goes
            self.client.delete_object(Bucket=self.location.bucket, Key=key)
        return f"s3://{self.location.bucket}/{target}"

    def set_aside_foreign(self, fingerprint: str) -> None:
        """Refuse and move aside every complete S3 checkpoint that records another fingerprint."""
        for step in self.complete_steps():
            theirs = self.fingerprint(step)
            if theirs != fingerprint:
                self.set_aside(step, theirs, fingerprint)

    def remove_checkpoints(self) -> None:
        """Delete this prefix's `checkpoint-N/` objects (a finished step's); refused ones stay."""
        for step in self.complete_steps():
            manifest = self.location.key(f"checkpoint-{step}", MANIFEST)
            self.client.delete_object(Bucket=self.location.bucket, Key=manifest)
        prefix = self.location.directory
        for key in self._keys(prefix):
            if checkpoint_step(key[len(prefix) :].partition("/")[0]) is not None:
                self.client.delete_object(Bucket=self.location.bucket, Key=key)

    def download(self, step: int, output_dir: Path) -> Path:
        """Download checkpoint `step` into `output_dir` (staged, verified against its manifest, renamed).

        Every file name the manifest lists is checked before anything is written (`UnsafePathError`)."""
        name = f"checkpoint-{step}"
        staging = output_dir / STAGING / name
        manifest_key = self.location.key(name, MANIFEST)
        body = self.client.get_object(Bucket=self.location.bucket, Key=manifest_key)["Body"].read()
        manifest = json.loads(body)
        files = {rel: self.location.key(name, rel) for rel in manifest["files"]}
        for rel in files:
            safe_relative(rel, staging)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        download_files(self.client, self.location.bucket, files, staging)
        (staging / MANIFEST).write_bytes(body)
        problem = verify_checkpoint(staging)
        if problem is not None:
            shutil.rmtree(staging, ignore_errors=True)
            raise ValueError(f"checkpoint {self.uri}/{name} failed verification after download: {problem}")
        final = output_dir / name
        if final.exists():
            shutil.rmtree(final)
        os.rename(staging, final)
        return final


def resolve_resume(
    output_dir: Path, store: S3CheckpointStore | None, fingerprint: str | None = None
) -> Path | None:
    """The checkpoint to resume from: the newest complete one, local or (downloaded) from S3; or None.

    With `fingerprint`, checkpoints that record another one are refused and moved aside first (module doc).
    """
    clean_staging(output_dir)
    if fingerprint is not None:
        set_aside_foreign(output_dir, fingerprint)
        if store is not None:
            store.set_aside_foreign(fingerprint)
    local = latest_complete_checkpoint(output_dir)
    local_step = checkpoint_step(local) if local is not None else -1
    if store is not None:
        for step in store.complete_steps():
            if step <= (local_step if local_step is not None else -1):
                break
            try:
                log.info("downloading checkpoint-%d from %s", step, store.uri)
                return store.download(step, output_dir)
            except UnsafePathError:
                raise  # a tampered store: stop, rather than quietly train from an older state
            except (ValueError, OSError) as exc:
                log.warning("skipping S3 checkpoint-%d: %s", step, exc)
    return local
