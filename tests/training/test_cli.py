"""`python -m otdistill.training JOB`: job files are checked strictly before anything is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from otdistill.config import ConfigError
from otdistill.training.__main__ import main, run_job


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ({"stage": "distill", "student": "x", "trian": {}}, "unknown key\\(s\\) in the job: trian"),
        ({"stage": "distill", "train": {"learnig_rate": 1.0}}, "learnig_rate"),
        ({"stage": "distill", "data": {"tsk": "qed"}}, "tsk"),
        ({"stage": "distill"}, "stage distill needs `student`"),
        ({"stage": "teacher_sft"}, "stage teacher_sft needs `teacher`"),
        ({"stage": "pretrain", "student": "x"}, "stage must be 'teacher_sft' or 'distill'"),
        ({"stage": "distill", "student": {"sorce": "x"}}, "sorce"),
    ],
)
def test_bad_jobs_fail_naming_the_problem(job: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        run_job(job)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(["stage", "distill"]))
    with pytest.raises(ConfigError, match="expected a mapping"):
        main([str(path)])
