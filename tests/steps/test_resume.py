"""Run-scoped, fingerprinted step checkpoints (`otdistill.steps.resume`) and the one fingerprint function."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest

from otdistill.config import RunConfig
from otdistill.fingerprint import differences, fingerprint, short, snapshot_data_hash
from otdistill.models import ResolvedModel
from otdistill.steps.resume import (
    FINGERPRINT_FILE,
    StepCheckpoints,
    prune_stale_checkpoints,
    step_checkpoints,
)
from otdistill.steps.runtime import RUN_ID_ENV
from otdistill.training import TrainConfig


def _model(revision: str) -> ResolvedModel:
    return ResolvedModel(path=Path("/m"), source="pypi:tiny", kind="pypi", revision=revision)


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    data = tmp_path / "train"
    data.mkdir()
    (data / "train.jsonl").write_text('{"dialogue": "a", "summary": "b"}\n', encoding="utf-8")
    (data / "data_report.json").write_text(json.dumps({"content_sha256": "f" * 64}), encoding="utf-8")
    return data


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OTDISTILL_CACHE", str(tmp_path / "pvc"))
    monkeypatch.setenv(RUN_ID_ENV, "run-1")
    return tmp_path / "pvc"


def test_fingerprint_covers_config_data_and_models_not_where_things_go() -> None:
    cfg = RunConfig()
    base = fingerprint(cfg.section_json("distill_student"), "a" * 64, {"base": "s@1"})
    moved = RunConfig.from_dict(
        {"distill": {"output_dir": "/elsewhere", "progress_bar": False, "logging_steps": 1}}
    )
    assert fingerprint(moved.section_json("distill_student"), "a" * 64, {"base": "s@1"}) == base
    lr = RunConfig.from_dict({"distill": {"learning_rate": 1e-3}})
    other = fingerprint(lr.section_json("distill_student"), "b" * 64, {"base": "s@2"})
    assert differences(base, other) == ["config", "data", "models"]
    assert differences(base, None) == ["config", "data", "models"]


def test_snapshot_data_hash_is_the_reports_content_hash(snapshot: Path) -> None:
    assert snapshot_data_hash(snapshot) == "f" * 64
    (snapshot / "data_report.json").unlink()
    assert len(snapshot_data_hash(snapshot)) == 64


def test_checkpoints_are_scoped_to_the_pipeline_run_and_step(env: Path, snapshot: Path) -> None:
    ckpt = StepCheckpoints("distill_student", "{}", snapshot)
    assert ckpt.directory == env / "checkpoints" / "run-1" / "distill_student"
    train = ckpt.for_training(TrainConfig(checkpoint_uri="s3://bucket/ckpt/"), {"base": _model("r1")})
    assert train.output_dir == str(ckpt.directory)
    assert train.checkpoint_uri == "s3://bucket/ckpt/run-1/distill_student"
    assert train.checkpoint_fingerprint == fingerprint("{}", "f" * 64, {"base": "pypi:tiny@r1"})


def test_a_run_id_that_is_not_a_path_component_is_refused(
    env: Path, snapshot: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(RUN_ID_ENV, "../other")
    with pytest.raises(ValueError, match="pipeline run id '../other'"):
        StepCheckpoints("train_teacher", "{}", snapshot)
    monkeypatch.delenv(RUN_ID_ENV)
    with pytest.raises(RuntimeError, match=RUN_ID_ENV):
        StepCheckpoints("train_teacher", "{}", snapshot)


def test_claimed_state_is_resumed_when_it_matches_and_moved_aside_when_not(
    env: Path, snapshot: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = StepCheckpoints("cache_teacher", "{}", snapshot)
    work = first.claim("cache", {"teacher": _model("r1")})
    (work / "shard-00000.safetensors").write_bytes(b"half a cache")

    again = StepCheckpoints("cache_teacher", "{}", snapshot).claim("cache", {"teacher": _model("r1")})
    assert (again / "shard-00000.safetensors").read_bytes() == b"half a cache"

    other = StepCheckpoints("cache_teacher", "{}", snapshot)
    with caplog.at_level(logging.WARNING):
        fresh = other.claim("cache", {"teacher": _model("r2")})
    assert list(p.name for p in fresh.iterdir()) == [FINGERPRINT_FILE]
    assert str(first.fingerprint) in caplog.text and str(other.fingerprint) in caplog.text
    assert "differ in: models" in caplog.text
    kept = other.directory / f"refused-{short(first.fingerprint)}" / "cache" / "shard-00000.safetensors"
    assert kept.read_bytes() == b"half a cache"


def test_a_finished_step_removes_its_checkpoints_but_not_refused_ones(env: Path, snapshot: Path) -> None:
    with step_checkpoints("train_teacher", "{}", snapshot) as ckpt:
        (ckpt.directory / "checkpoint-2").mkdir(parents=True)
    assert not (env / "checkpoints" / "run-1").exists()

    with (
        pytest.raises(RuntimeError, match="killed"),
        step_checkpoints("train_teacher", "{}", snapshot) as ckpt,
    ):
        (ckpt.directory / "checkpoint-2").mkdir(parents=True)
        raise RuntimeError("killed")
    assert (ckpt.directory / "checkpoint-2").is_dir()  # kept for a retry

    with step_checkpoints("train_teacher", "{}", snapshot) as ckpt:
        (ckpt.directory / "refused-abc" / "checkpoint-4").mkdir(parents=True)
    assert [p.name for p in ckpt.directory.iterdir()] == ["refused-abc"]


def _run_checkpoints(root: Path, run_id: str, age_days: float, now: float, size: int = 1000) -> Path:
    """`<root>/<run id>/distill_student/checkpoint-8/` holding one file, everything `age_days` old."""
    ckpt = root / run_id / "distill_student" / "checkpoint-8"
    ckpt.mkdir(parents=True)
    (ckpt / "model.safetensors").write_bytes(b"\0" * size)
    stamp = now - age_days * 86400
    for path in (ckpt / "model.safetensors", ckpt, ckpt.parent, root / run_id):
        os.utime(path, (stamp, stamp))
    return root / run_id


def test_stale_checkpoints_of_other_runs_are_pruned_by_their_newest_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A run whose checkpoints nothing wrote to for longer than the limit goes; a recent one, this run's
    own (however old) and one with a single recent file deep inside stay; 0 keeps everything."""
    root, now = tmp_path / "checkpoints", time.time()
    failed = _run_checkpoints(root, "failed-run", 9, now, size=4096)
    recent = _run_checkpoints(root, "recent-run", 2, now)
    mine = _run_checkpoints(root, "this-run", 30, now)
    touched = _run_checkpoints(root, "touched-run", 20, now)
    (touched / "distill_student" / "checkpoint-8" / "trainer_state.json").write_text("{}")  # written now
    assert prune_stale_checkpoints(0, keep="this-run", root=root, now=now) == []
    assert prune_stale_checkpoints(7, keep="this-run", root=tmp_path / "absent", now=now) == []
    with caplog.at_level(logging.INFO, logger="otdistill.steps.resume"):
        removed = prune_stale_checkpoints(7, keep="this-run", root=root, now=now)
    assert [(p.run_id, p.bytes, round(p.idle_days)) for p in removed] == [("failed-run", 4096, 9)]
    assert not failed.exists() and recent.is_dir() and mine.is_dir() and touched.is_dir()
    assert "removed the checkpoints of run failed-run" in caplog.text and "9.0 days" in caplog.text
    assert [p.run_id for p in prune_stale_checkpoints(1, keep="this-run", root=root, now=now)] == [
        "recent-run"
    ]
