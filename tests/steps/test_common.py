"""Shared step helpers: Model artifact references, snapshot data configs, the parent-run lookup."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from otdistill.config import RunConfig
from otdistill.models import ModelSpec, resolve_model
from otdistill.steps.common import (
    RUN_ID_ENV,
    copy_model,
    pipeline_run,
    read_model_info,
    resolve_model_artifact,
    snapshot_data_config,
    write_model_reference,
)


def test_model_reference_round_trip(tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    _, student = tiny_pair
    spec = ModelSpec(source=str(student))
    resolved = resolve_model(spec)
    info = write_model_reference(tmp_path / "ref", spec, resolved, "student")
    assert info["kind"] == "reference" and info["source_kind"] == "local" and "path" not in info
    assert read_model_info(tmp_path / "ref")["revision"] == resolved.revision
    assert json.loads((tmp_path / "ref" / "model_ref.json").read_text())["source"] == str(student)
    assert resolve_model_artifact(tmp_path / "ref").revision == resolved.revision


def test_trained_model_artifact_resolves_by_content(tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    _, student = tiny_pair
    copy_model(student, tmp_path / "trained")
    assert (
        resolve_model_artifact(tmp_path / "trained").revision
        == resolve_model(ModelSpec(str(student))).revision
    )


def test_not_a_model_artifact_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither model_ref.json nor a Hugging Face config.json"):
        resolve_model_artifact(tmp_path / "empty")


def test_snapshot_config_keeps_the_cuts_and_drops_source_details() -> None:
    cfg = RunConfig.from_dict({"data": {"source": "org/ds", "revision": "abc", "limit": 5, "max_length": 77}})
    snap = snapshot_data_config(cfg, "/snap", "validation")
    assert (snap.source, snap.split, snap.revision, snap.limit, snap.max_length) == (
        "/snap",
        "validation",
        None,
        None,
        77,
    )


def test_pipeline_run_needs_the_run_id(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(RUN_ID_ENV, raising=False)
    cfg = RunConfig.from_dict({"tracking": {"tracking_uri": f"sqlite:///{tmp_path / 'm.db'}"}})
    with pytest.raises(RuntimeError, match=RUN_ID_ENV):
        pipeline_run(cfg.tracking, "x")
    monkeypatch.setenv(RUN_ID_ENV, "kfp-run-7")
    first = pipeline_run(cfg.tracking, "x")
    assert pipeline_run(cfg.tracking, "x").run_id == first.run_id  # found again, not opened twice
