"""Issue 14 vector 2: a checkpoint manifest naming files outside the checkpoint is refused, from S3 (real
S3 API: moto server on 127.0.0.1) and on local disk, and nothing is written outside `output_dir`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import boto3
import pytest

from otdistill.safe_paths import UnsafePathError
from otdistill.training import resolve_resume, verify_checkpoint
from otdistill.training.checkpoints import MANIFEST, STAGING, S3CheckpointStore, finalize_checkpoint


def _manifest(step: int, files: dict[str, bytes]) -> bytes:
    listed = {n: {"size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for n, b in files.items()}
    return json.dumps({"step": step, "files": listed, "written_at": 0, "fingerprint": None}).encode()


@pytest.mark.servers
def test_s3_manifest_naming_a_path_outside_is_refused_and_not_resumed(s3_env: str, tmp_path: Path) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_env)
    s3.create_bucket(Bucket="evil-ckpt")
    planted = b"planted"
    files = {"model.safetensors": b"weights", "../../../planted.txt": planted}
    for name, body in files.items():
        s3.put_object(Bucket="evil-ckpt", Key=f"run/checkpoint-5/{name}", Body=body)
    s3.put_object(Bucket="evil-ckpt", Key=f"run/checkpoint-5/{MANIFEST}", Body=_manifest(5, files))
    store = S3CheckpointStore("s3://evil-ckpt/run")
    assert store.complete_steps() == [5]  # complete by the S3 protocol: its manifest is there

    output_dir = tmp_path / "job" / "out"
    output_dir.mkdir(parents=True)
    # Unconfined, `.staging/checkpoint-5/../../../planted.txt` is tmp_path/job/planted.txt, and the
    # checkpoint verified as complete. Resume stops on it instead of skipping to an older state.
    with pytest.raises(UnsafePathError, match=r"'\.\./\.\./\.\./planted\.txt'.*checkpoint-5"):
        resolve_resume(output_dir, store)
    assert sorted(p for p in tmp_path.rglob("*")) == [tmp_path / "job", output_dir]
    with pytest.raises(UnsafePathError):
        store.download(5, output_dir)
    assert list(output_dir.iterdir()) == []

    absolute = tmp_path / "abs-planted.txt"
    s3.put_object(
        Bucket="evil-ckpt",
        Key=f"run/checkpoint-5/{MANIFEST}",
        Body=_manifest(5, {"model.safetensors": b"weights", str(absolute): planted}),
    )
    with pytest.raises(UnsafePathError, match="absolute"):
        store.download(5, output_dir)
    assert not absolute.exists() and list(output_dir.iterdir()) == []


def test_local_manifest_naming_a_file_outside_is_refused(tmp_path: Path) -> None:
    output_dir = tmp_path / "out"
    staging = output_dir / STAGING / "checkpoint-2"
    staging.mkdir(parents=True)
    (staging / "model.safetensors").write_bytes(b"weights")
    checkpoint = finalize_checkpoint(staging, output_dir / "checkpoint-2", 2)
    assert verify_checkpoint(checkpoint) is None
    secret = tmp_path / "secret.txt"  # a file outside that the manifest would otherwise hash and accept
    secret.write_bytes(b"secret")
    manifest = json.loads((checkpoint / MANIFEST).read_text())
    manifest["files"]["../../secret.txt"] = {"size": 6, "sha256": hashlib.sha256(b"secret").hexdigest()}
    (checkpoint / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(UnsafePathError, match=r"'\.\./\.\./secret\.txt'"):
        verify_checkpoint(checkpoint)
