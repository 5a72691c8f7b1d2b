"""A local run in which a step fails: the exit handler (`close_run`) still runs, and every MLflow run ends.

The data source is broken (its rows lack the task's fields), so the data steps after `open_run` fail inside
their step runs. kfp.local skips every step downstream of it (all of them: the SFT
baseline is on, so no `reference_model` runs), runs the exit task with the final status FAILED and then
raises; the parent run must end FAILED, tagged with the failing step and its error, and no run of the
experiment may be left RUNNING.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from otdistill.config import load_config
from otdistill.steps.common import RUN_ID_ENV

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
def test_failing_step_leaves_no_mlflow_run_running(
    tiny_pair: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    from otdistill.pipelines.local import run_local

    broken = tmp_path / "broken-data"
    broken.mkdir()
    for split in ("train", "validation"):
        rows = [{"id": f"{split}-{i}", "text": "no dialogue, no summary"} for i in range(4)]
        (broken / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    teacher, student = tiny_pair
    cfg = load_config(
        ROOT / "configs" / "tiny.yaml",
        {
            "teacher.source": str(teacher),
            "student.source": str(student),
            "data.source": str(broken),
        },
    )
    monkeypatch.setenv("OTDISTILL_CACHE", str(tmp_path / "model-cache"))
    monkeypatch.setenv(RUN_ID_ENV, "")  # run_local sets it; restored afterwards
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="prepare"):
        run_local(cfg, tmp_path / "run")
    print(f"failing local run: {time.monotonic() - started:.0f} s")

    uri = f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert runs and not [r.info.run_id for r in runs if r.info.status == "RUNNING"]
    (parent,) = [r for r in runs if r.data.tags.get("otdistill.role") == "pipeline"]
    assert parent.info.status == "FAILED"
    # Both data steps fail (both splits are broken); kfp.local runs independent tasks in no fixed order,
    # so the failed step recorded is whichever of the two ran first.
    failed = parent.data.tags["otdistill.failed_step"]
    split = {"prepare_data": "train", "prepare_validation_data": "validation"}[failed]
    assert "field 'dialogue': field is missing" in parent.data.tags["otdistill.error"]
    assert parent.data.tags["otdistill.kfp_state"] == "FAILED"
    (step,) = [r for r in runs if r.data.tags.get("otdistill.step") == failed]
    assert step.info.status == "FAILED"
    assert step.data.tags["otdistill.error"].startswith(f"DataValidationError: dialogsum/{split}")
