"""`python -m otdistill.training JOB.yaml`: run one training stage from a job file (also under torchrun).

The job file holds `stage` ("teacher_sft" | "distill"), `train` (TrainConfig fields), `data` (DataConfig
fields), `student` / `teacher` (model sources as `ModelSpec` takes them: paths, pypi:..., s3://...). Unknown
keys fail naming them. The result (`TrainResult`) is printed as JSON on the main process.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

import yaml

from otdistill.config import ConfigError, from_dict
from otdistill.data import DataConfig
from otdistill.models import ModelSpec
from otdistill.training.config import TrainConfig
from otdistill.training.runner import TrainResult, distill_student, set_torch_threads, train_teacher_sft

JOB_KEYS = {"stage", "train", "data", "student", "teacher"}


def _spec(value: Any, where: str) -> ModelSpec | None:
    if value is None:
        return None
    if isinstance(value, str):
        return ModelSpec(source=value)
    if isinstance(value, dict):
        return from_dict(ModelSpec, value, where)
    raise ConfigError(f"{where}: expected a model source string or a ModelSpec mapping, got {value!r}")


def run_job(job: dict[str, Any]) -> TrainResult:
    """Run the stage a job dict describes (see the module doc)."""
    unknown = sorted(set(job) - JOB_KEYS)
    if unknown:
        allowed = ", ".join(sorted(JOB_KEYS))
        raise ConfigError(f"unknown key(s) in the job: {', '.join(unknown)} (allowed: {allowed})")
    stage = job.get("stage")
    train = from_dict(TrainConfig, job.get("train") or {}, "train")
    data = from_dict(DataConfig, job.get("data") or {}, "data")
    student, teacher = _spec(job.get("student"), "student"), _spec(job.get("teacher"), "teacher")
    if stage == "teacher_sft":
        if teacher is None:
            raise ConfigError("stage teacher_sft needs `teacher`")
        return train_teacher_sft(train, teacher, data)
    if stage == "distill":
        if student is None:
            raise ConfigError("stage distill needs `student`")
        return distill_student(train, student, teacher, data)
    raise ConfigError(f"stage must be 'teacher_sft' or 'distill', got {stage!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m otdistill.training", description=__doc__)
    parser.add_argument("job", help="YAML or JSON job file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("OTDISTILL_LOG_LEVEL", "WARNING"))
    set_torch_threads()
    with open(args.job, encoding="utf-8") as fh:
        job = yaml.safe_load(fh)
    if not isinstance(job, dict):
        raise ConfigError(f"{args.job}: expected a mapping at the top level")
    result = run_job(job)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(result.to_dict(), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
