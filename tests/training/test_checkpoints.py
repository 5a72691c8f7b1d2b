"""Atomic checkpoints: complete ones verify, anything partial is never resumed from; S3 mirror round trip."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import boto3
import pytest
from safetensors.torch import load_file

from otdistill.data import Example
from otdistill.fingerprint import differences as fp_differences
from otdistill.fingerprint import fingerprint
from otdistill.fingerprint import short as fp_short
from otdistill.training import distill_student, latest_complete_checkpoint, resolve_resume, verify_checkpoint
from otdistill.training.checkpoints import (
    MANIFEST,
    STAGING,
    S3CheckpointStore,
    finalize_checkpoint,
    manifest_fingerprint,
)
from otdistill.training.trainer import DistillationTrainer
from tests.training.conftest import MAX_LENGTH, tiny_config


def _fake_checkpoint(root: Path, step: int, payload: bytes = b"weights") -> Path:
    staging = root / STAGING / f"checkpoint-{step}"
    staging.mkdir(parents=True)
    (staging / "model.safetensors").write_bytes(payload * 100)
    (staging / "sub").mkdir()
    (staging / "sub" / "state.json").write_text(json.dumps({"step": step}))
    return finalize_checkpoint(staging, root / f"checkpoint-{step}", step)


def test_manifest_catches_missing_truncated_and_altered_files(tmp_path: Path) -> None:
    ckpt = _fake_checkpoint(tmp_path, 3)
    assert verify_checkpoint(ckpt) is None and not (tmp_path / STAGING).exists()
    weights = ckpt / "model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:-1])
    assert "bytes" in (verify_checkpoint(ckpt) or "")
    weights.write_bytes(original[:-1] + b"X")
    assert "sha256" in (verify_checkpoint(ckpt) or "")
    weights.unlink()
    assert "missing" in (verify_checkpoint(ckpt) or "")
    (ckpt / MANIFEST).unlink()
    assert "no completion manifest" in (verify_checkpoint(ckpt) or "")


def test_newest_complete_checkpoint_wins_partial_ones_are_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _fake_checkpoint(tmp_path, 2)
    good = _fake_checkpoint(tmp_path, 4)
    partial = tmp_path / "checkpoint-6"  # e.g. copied by hand, or left by a tool that is not atomic
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half")
    (tmp_path / STAGING / "checkpoint-8").mkdir(parents=True)  # an interrupted save
    with caplog.at_level(logging.WARNING):
        assert resolve_resume(tmp_path, None) == good
    assert "ignoring incomplete checkpoint" in caplog.text and "checkpoint-6" in caplog.text
    assert not (tmp_path / STAGING).exists()
    # re-saving a step replaces the old directory in one rename
    again = _fake_checkpoint(tmp_path, 4, payload=b"newer")
    assert verify_checkpoint(again) is None and (again / "model.safetensors").read_bytes().startswith(
        b"newer"
    )


def test_crash_while_saving_leaves_no_checkpoint_that_loads(
    tiny_pair: tuple[Path, Path], examples: list[Example], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The optimizer save of step 4 dies (weights already written): checkpoint-4 must not exist."""
    original = DistillationTrainer._save_optimizer_and_scheduler

    def dying(self: DistillationTrainer, output_dir: str) -> None:
        if self.state.global_step == 4:
            raise OSError("No space left on device")
        original(self, output_dir)

    monkeypatch.setattr(DistillationTrainer, "_save_optimizer_and_scheduler", dying)
    teacher, student = tiny_pair
    with pytest.raises(OSError, match="No space left"):
        distill_student(tiny_config(tmp_path, max_steps=6), student, teacher, examples, max_length=MAX_LENGTH)
    assert not (tmp_path / "checkpoint-4").exists()
    assert (tmp_path / STAGING / "checkpoint-4" / "model.safetensors").is_file()  # the half-written save
    assert latest_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    assert resolve_resume(tmp_path, None) == tmp_path / "checkpoint-2"
    assert not (tmp_path / STAGING).exists()


@pytest.mark.servers
def test_s3_mirror_and_resume_from_s3(
    s3_env: str, tiny_pair: tuple[Path, Path], examples: list[Example], tmp_path: Path
) -> None:
    """Checkpoints go to S3 (manifest last); a fresh machine resumes from the newest complete one there."""
    s3 = boto3.client("s3", endpoint_url=s3_env)
    s3.create_bucket(Bucket="ckpt")
    uri = "s3://ckpt/runs/r1"
    teacher, student = tiny_pair
    first = tiny_config(tmp_path / "a", max_steps=4, checkpoint_uri=uri)
    distill_student(first, student, teacher, examples, max_length=MAX_LENGTH)
    store = S3CheckpointStore(uri)
    assert store.complete_steps() == [4, 2]
    # a partial upload (no manifest) of a later step is not a checkpoint
    s3.put_object(Bucket="ckpt", Key="runs/r1/checkpoint-6/model.safetensors", Body=b"partial")
    assert store.complete_steps() == [4, 2]

    fresh = tmp_path / "b"  # another pod: empty local disk
    resumed = distill_student(
        tiny_config(fresh, max_steps=6, checkpoint_uri=uri, resume=True),
        student,
        teacher,
        examples,
        max_length=MAX_LENGTH,
    )
    assert resumed.resumed_from == str(fresh / "checkpoint-4")
    assert resumed.global_step == 6
    assert [row["step"] for row in resumed.history] == [1, 2, 3, 4, 5, 6]  # steps 1-4 from the checkpoint
    assert store.complete_steps() == [6, 4, 2]
    local = load_file(str(fresh / "checkpoint-4" / "model.safetensors"))
    assert set(local) == set(load_file(str(tmp_path / "a" / "checkpoint-4" / "model.safetensors")))


def _safetensors_sha(checkpoint: Path) -> str:
    import hashlib

    return hashlib.sha256((checkpoint / "model.safetensors").read_bytes()).hexdigest()


def test_a_foreign_checkpoint_is_refused_and_kept_a_matching_one_is_resumed(
    tiny_pair: tuple[Path, Path], examples: list[Example], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Checkpoints of another fingerprint (here: other data) in the same directory are never resumed: a
    warning names both fingerprints, they move to refused-<hex>/ untouched, training starts at step 0 and
    its own saves do not overwrite them. A checkpoint with this step's fingerprint is resumed."""
    teacher, student = tiny_pair
    section = json.dumps({"distill": {"max_steps": 4}})
    ours = fingerprint(section, "a" * 64, {"base": "student@sha256:1"})
    theirs = fingerprint(section, "b" * 64, {"base": "student@sha256:1"})
    assert ours != theirs and fp_differences(ours, theirs) == ["data"]
    out = tmp_path / "run"
    distill_student(
        tiny_config(out, max_steps=4, checkpoint_fingerprint=theirs),
        student,
        teacher,
        examples,
        max_length=MAX_LENGTH,
    )
    assert manifest_fingerprint(out / "checkpoint-4") == theirs
    foreign_weights = _safetensors_sha(out / "checkpoint-4")

    with caplog.at_level(logging.WARNING, logger="otdistill.training.checkpoints"):
        fresh = distill_student(
            tiny_config(out, max_steps=2, resume=True, checkpoint_fingerprint=ours),
            student,
            teacher,
            examples,
            max_length=MAX_LENGTH,
        )
    assert fresh.resumed_from is None
    assert [row["step"] for row in fresh.history] == [1, 2]  # from step 0
    refusals = [r.getMessage() for r in caplog.records if "refusing to resume" in r.getMessage()]
    assert len(refusals) == 2, caplog.text  # checkpoint-4 and checkpoint-2
    assert all(theirs in m and ours in m and "differ in: data" in m for m in refusals)
    kept = out / f"refused-{fp_short(theirs)}"
    assert sorted(p.name for p in kept.iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert verify_checkpoint(kept / "checkpoint-4") is None
    assert _safetensors_sha(kept / "checkpoint-4") == foreign_weights
    assert manifest_fingerprint(out / "checkpoint-2") == ours  # this run's own save, beside them

    resumed = distill_student(
        tiny_config(out, max_steps=4, resume=True, checkpoint_fingerprint=ours),
        student,
        teacher,
        examples,
        max_length=MAX_LENGTH,
    )
    assert resumed.resumed_from == str(out / "checkpoint-2")
    assert [row["step"] for row in resumed.history] == [1, 2, 3, 4]
    assert manifest_fingerprint(out / "checkpoint-4") == ours
    assert _safetensors_sha(kept / "checkpoint-4") == foreign_weights  # rotation never reached it


def test_a_checkpoint_without_a_fingerprint_is_refused_when_one_is_expected(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    legacy = _fake_checkpoint(tmp_path, 6)  # written without a fingerprint (older otdistill, or by hand)
    ours = fingerprint("{}", "c" * 64, {})
    with caplog.at_level(logging.WARNING):
        assert resolve_resume(tmp_path, None, ours) is None
    assert "records fingerprint none" in caplog.text and ours in caplog.text
    assert not legacy.exists() and (tmp_path / "refused-none" / "checkpoint-6").is_dir()
    # without a fingerprint to match (plain library use) nothing is checked
    matching = _fake_checkpoint(tmp_path, 2)
    assert resolve_resume(tmp_path, None) == matching


@pytest.mark.servers
def test_foreign_s3_checkpoints_are_refused_and_moved_aside_in_s3(s3_env: str, tmp_path: Path) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_env)
    s3.create_bucket(Bucket="ckpt-fp")
    store = S3CheckpointStore("s3://ckpt-fp/runs/r9/distill_student")
    theirs = fingerprint("{}", "d" * 64, {})
    ours = fingerprint("{}", "e" * 64, {})
    staging = tmp_path / "src" / STAGING / "checkpoint-3"
    staging.mkdir(parents=True)
    (staging / "model.safetensors").write_bytes(b"w" * 64)
    store.upload(finalize_checkpoint(staging, tmp_path / "src" / "checkpoint-3", 3, theirs))
    assert store.complete_steps() == [3] and store.fingerprint(3) == theirs

    assert resolve_resume(tmp_path / "local", store, ours) is None
    assert store.complete_steps() == []
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="ckpt-fp")["Contents"]}
    aside = f"runs/r9/distill_student/refused-{fp_short(theirs)}/checkpoint-3"
    assert keys == {f"{aside}/model.safetensors", f"{aside}/{MANIFEST}"}
