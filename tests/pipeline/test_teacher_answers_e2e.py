"""The authors' recipe end to end, locally (kfp.local + SQLite MLflow, the tiny random pair): the main
pipeline's trunk with `targets.source: teacher`, one shot and no teacher SFT, and a distilled student on
it. The teacher answers the training rows, the teacher cache and the student read the answers' snapshot
(distillation checks the cache against the data it reads), and MLflow records both hashes. Only the
trunk and one student run, to keep the test short: the rest of the DAG does not change with the recipe.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from otdistill.config import RunConfig, load_config
from otdistill.steps.common import RUN_ID_ENV

ROOT = Path(__file__).resolve().parents[2]


def _trunk_and_one_student(cfg: RunConfig) -> Any:
    from otdistill.components.distill_student.component import distill_student
    from otdistill.pipelines.otdistill_pipeline import Configure, Trunk, build_dag

    def body(trunk: Trunk, params: Mapping[str, Any], configure: Configure) -> None:
        configure(
            distill_student(
                config=trunk.opened.outputs["distill_student"],
                teacher_cache=trunk.teacher_cache,
                train_data=trunk.train_data,
            ),
            "distill_student",
        )

    return build_dag(cfg, "the trunk with teacher answers, and one student", body)


@pytest.mark.e2e
def test_a_student_learns_the_few_shot_teacher_answers(tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from otdistill.pipelines.local import run_local
    from tests.tracking.mlflow_state import restore_mlflow_state

    teacher, student = tiny_pair
    cfg = load_config(
        ROOT / "configs" / "tiny.yaml",
        {
            "teacher.source": str(teacher),
            "student.source": str(student),
            "data.source": str(ROOT.parent / "shared" / "data" / "dialogsum"),
            "data.limit": 6,
            "data.max_length": 1024,  # one whole dialogue as the shot
            "steps.skip_teacher_sft": True,
            "targets.source": "teacher",
            "targets.few_shot": 1,
        },
    )
    terminal = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, restore_mlflow_state():
        mp.setenv("OTDISTILL_CACHE", str(tmp_path / "model-cache"))
        mp.setenv(RUN_ID_ENV, "")
        result = run_local(cfg, tmp_path / "run", terminal=terminal, build=_trunk_and_one_student)
    print(terminal.getvalue())
    assert "teacher-answers" in terminal.getvalue()
    client = MlflowClient(tracking_uri=result.tracking_uri)
    parent = client.get_run(result.mlflow_run_id)
    assert parent.info.status == "FINISHED"
    answers_hash, gold_hash = (
        parent.data.tags["otdistill.data_hash"],
        parent.data.tags["otdistill.gold_data_hash"],
    )
    assert len(answers_hash) == len(gold_hash) == 64 and answers_hash != gold_hash
    runs = {
        r.data.tags["otdistill.step"]: r
        for r in client.search_runs(
            [result.experiment_id], f"tags.`mlflow.parentRunId` = '{result.mlflow_run_id}'"
        )
    }
    assert {"prepare_data", "teacher_answers", "cache_teacher", "distill_student"} <= set(runs)
    assert all(r.info.status == "FINISHED" for r in runs.values())
    answered = runs["teacher_answers"].data.metrics
    assert answered["data/teacher_answers/shots"] == 1
    assert answered["data/teacher_answers/rows_kept"] + answered["data/teacher_answers/rows_skipped"] == 5
    # the teacher cache and the student read the answers' snapshot: its digest is their training dataset
    for step in ("cache_teacher", "distill_student"):
        digests = {d.dataset.digest for d in runs[step].inputs.dataset_inputs}
        assert answers_hash[:16] in digests and gold_hash[:16] not in digests, step
