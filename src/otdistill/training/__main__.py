"""`python -m otdistill.training JOB.yaml`: run one training stage from a job file (also under torchrun).

The job file holds `stage` ("teacher_sft" | "distill"), `train` (TrainConfig fields), `data` (DataConfig
fields), optionally `validation` (DataConfig fields: the rows of the validation loss), `student` /
`teacher` (model sources as `ModelSpec` takes them: paths, pypi:..., s3://...; or `{resolved: {...}}`, a
model a step already resolved). Unknown keys fail naming them. The result
(`TrainResult`) is printed as JSON on the main process. This is what each rank runs when a training step
launches several processes (`otdistill.training.launch`); rank 0 then logs to the step's MLflow run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

import yaml

from otdistill.config import ConfigError
from otdistill.training.launch import TrainingJob, attached_step_run, run_in_process
from otdistill.training.runner import TrainResult, set_torch_threads


def run_job(job: dict[str, Any]) -> TrainResult:
    """Run the stage a job dict describes (see the module doc)."""
    return run_in_process(TrainingJob.from_dict(job))


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
    with attached_step_run():
        result = run_job(job)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(result.to_dict(), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
