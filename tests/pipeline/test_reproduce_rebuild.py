"""The rebuilt config (`reproduce_record.rebuild_config`) and the model checks (`reproduce_checks`), without a
pipeline run: a hub branch is pinned to the recorded commit, precision and deterministic mode are pinned, a
`--set` is a deviation; a model directory that is gone or whose content changed is refused, naming it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from otdistill.config import RunConfig, load_config
from otdistill.reproduce_checks import check_available
from otdistill.reproduce_record import Original, ReproduceError, rebuild_config

ROOT = Path(__file__).resolve().parents[2]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _original(cfg: RunConfig, lineage: dict[str, str], precisions: dict[str, str] | None = None) -> Original:
    return Original(
        model_name="m",
        version="3",
        parent_run_id="run-1",
        experiment_id="1",
        version_tags={f"otdistill.lineage.{k}": v for k, v in lineage.items()},
        parent_tags={},
        config=cfg,
        precisions=precisions or {},
    )


def test_the_rebuild_pins_what_the_run_resolved_and_records_deviations() -> None:
    cfg = load_config(
        ROOT / "configs" / "tiny.yaml",
        {"teacher.source": "org/teacher", "teacher.revision": "main", "student.source": "pypi:x"},
    )
    cfg = cfg.with_overrides({"distill.precision": "auto"})
    original = _original(
        cfg, {"teacher_revision": COMMIT, "student_revision": "sha256:ab"}, {"distill": "fp32"}
    )
    rebuild = rebuild_config(original, {"eval.batch_size": 2}, "sqlite:///x.db")
    new = rebuild.config
    assert new.teacher.revision == COMMIT and rebuild.pins["teacher.revision"] == f"main -> {COMMIT}"
    assert new.student == cfg.student  # not a hub model: its content hash is checked, nothing to pin
    assert new.distill.precision == "fp32" and rebuild.pins["distill.precision"] == "auto -> fp32"
    assert all(getattr(new, s).deterministic for s in ("teacher_sft", "sft_baseline", "distill"))
    assert not new.steps.enable_caching  # every step runs again
    assert new.tracking.registered_model_name == "m-reproduction"
    assert new.tracking.tracking_uri == "sqlite:///x.db"
    assert new.eval.batch_size == 2 and rebuild.deviations == {"eval.batch_size": 2}
    assert (new.distill.seed, new.data) == (cfg.distill.seed, cfg.data)
    with pytest.raises(ReproduceError, match="--set.*learnig_rate"):
        rebuild_config(original, {"distill.learnig_rate": 1.0}, "")


def test_a_model_that_is_gone_or_changed_is_refused(
    tiny_pair: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from otdistill.models import resolve_model

    monkeypatch.setenv("OTDISTILL_CACHE", str(tmp_path / "cache"))
    teacher, student = tiny_pair
    copy = tmp_path / "student"
    shutil.copytree(student, copy)
    cfg = load_config(
        ROOT / "configs" / "tiny.yaml", {"teacher.source": str(teacher), "student.source": str(copy)}
    )
    revisions = {role: resolve_model(getattr(cfg, role)).revision for role in ("teacher", "student")}
    lineage = {"teacher_revision": revisions["teacher"], "student_revision": revisions["student"]}

    (copy / "config.json").write_text((copy / "config.json").read_text() + "\n")
    with pytest.raises(ReproduceError, match=f"student: the revision recorded for {copy} is gone"):
        check_available(_original(cfg, lineage), cfg)
    # a deliberate --set of the student is not held to the record (the data check then needs no hash)
    checked = check_available(_original(cfg, lineage), cfg, ["student.source"])
    assert checked[0].startswith("teacher: ") and "not held to the recorded hash" not in checked[-1]
    shutil.rmtree(copy)
    with pytest.raises(ReproduceError, match=f"student: the local path {copy} .* does not exist"):
        check_available(_original(cfg, lineage), cfg)
