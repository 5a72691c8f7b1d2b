"""One training stage on one process, or on N data-parallel processes through torchrun: the one launch path.

A training step (teacher SFT, the SFT baseline, distillation) describes its stage as a `TrainingJob` and
calls `run_training(job, processes)`:

* `processes == 1`: the stage runs in this process, as it always did;
* `processes > 1`: the job is written to a file and `python -m torch.distributed.run --standalone
  --nproc-per-node N -m otdistill.training JOB` runs it as a child (one process per GPU: NCCL on GPUs,
  gloo on CPU). The step waits for it, echoing its output to the pod's log. Rank 0 writes the model, its
  checkpoints and `training_result.json`; the step reads that file back. A failed child raises
  `DistributedTrainingError` with its exit code and the tail of its output (torchrun prints the failing
  rank's traceback there); a SIGTERM to the step (pod eviction) stops the child before it propagates.

The batch: each process takes `per_device_batch_size` examples per micro-batch, so one optimizer step sees
`per_device_batch_size x gradient_accumulation_steps x processes` examples (the global batch). The loss is
normalised by the token counts of the whole global batch (`DistillationTrainer`, `objective.combine`), so N
processes compute the same loss and gradients as one process with an N-times larger batch
(tests/training/test_distributed.py).

While the child trains, rank 0 logs its metrics to the step's MLflow run: the launcher passes the run's id
and tracking URI in the environment (`STEP_RUN_ENV`, `MLFLOW_TRACKING_URI`), and `attached_step_run`
re-enters that run in the child without ending it; the step ends it (FINISHED, FAILED or KILLED).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from otdistill.config import ConfigError, from_dict
from otdistill.data import DataConfig
from otdistill.models import ModelSpec, ResolvedModel
from otdistill.training.config import TrainConfig
from otdistill.training.errors import TrainingError
from otdistill.training.runner import MODEL_DIR, TrainResult, distill_student, train_teacher_sft

log = logging.getLogger(__name__)

Stage = Literal["teacher_sft", "distill"]
STAGES: tuple[str, ...] = ("teacher_sft", "distill")
JOB_KEYS = {"stage", "train", "data", "validation", "student", "teacher"}
RESOLVED_KEYS = {"path", "source", "kind", "revision", "trust_remote_code", "gguf_file"}
# The MLflow run (the step's) that rank 0 of a launched child logs its metrics to.
STEP_RUN_ENV = "OTDISTILL_STEP_RUN_ID"
TAIL_LINES = 60
STOP_GRACE_S = 30.0

ModelArg = ModelSpec | ResolvedModel | None


class DistributedTrainingError(TrainingError):
    """The torchrun child of a multi-process stage failed: its exit code and the tail of its output."""

    def __init__(self, processes: int, returncode: int, tail: str):
        self.processes = processes
        self.returncode = returncode
        self.tail = tail
        super().__init__(
            f"distributed training on {processes} processes failed (torchrun exit code {returncode}); "
            f"the end of its output:\n{tail}"
        )


@dataclass
class TrainingJob:
    """One stage: "teacher_sft" trains `teacher`; "distill" trains `student` (from `teacher` unless the loss
    is "none", the SFT baseline). Models are specs (resolved by the stage) or already resolved models.
    `validation`: the rows of the validation loss (read when `train.eval_every_steps` is set)."""

    stage: Stage
    train: TrainConfig
    data: DataConfig
    student: ModelArg = None
    teacher: ModelArg = None
    validation: DataConfig | None = None

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ConfigError(f"stage must be 'teacher_sft' or 'distill', got {self.stage!r}")
        if self.stage == "teacher_sft" and self.teacher is None:
            raise ConfigError("stage teacher_sft needs `teacher`")
        if self.stage == "distill" and self.student is None:
            raise ConfigError("stage distill needs `student`")

    def to_dict(self) -> dict[str, Any]:
        """The job file's content (what `from_dict` reads back, in the torchrun child)."""
        return {
            "stage": self.stage,
            "train": self.train.to_dict(),
            "data": self.data.to_dict(),
            "validation": self.validation.to_dict() if self.validation is not None else None,
            "student": _model_to_dict(self.student),
            "teacher": _model_to_dict(self.teacher),
        }

    @classmethod
    def from_dict(cls, job: Mapping[str, Any]) -> TrainingJob:
        """A job from a job file's mapping; unknown keys fail naming them."""
        unknown = sorted(set(job) - JOB_KEYS)
        if unknown:
            allowed = ", ".join(sorted(JOB_KEYS))
            raise ConfigError(f"unknown key(s) in the job: {', '.join(unknown)} (allowed: {allowed})")
        return cls(
            stage=job.get("stage"),  # type: ignore[arg-type]  # checked in __post_init__
            train=from_dict(TrainConfig, job.get("train") or {}, "train"),
            data=from_dict(DataConfig, job.get("data") or {}, "data"),
            validation=_validation_from(job.get("validation")),
            student=_model_from(job.get("student"), "student"),
            teacher=_model_from(job.get("teacher"), "teacher"),
        )


def _validation_from(value: Any) -> DataConfig | None:
    return from_dict(DataConfig, value, "validation") if value else None


def _model_to_dict(model: ModelArg) -> Any:
    if model is None:
        return None
    if isinstance(model, ResolvedModel):
        # Resolved once by the step: the ranks load the same files and record the same provenance.
        return {"resolved": {**{k: getattr(model, k) for k in RESOLVED_KEYS}, "path": str(model.path)}}
    return {k: v for k, v in vars(model).items() if v is not None}


def _model_from(value: Any, where: str) -> ModelArg:
    """A job's model entry: a source string, a ModelSpec mapping, or {"resolved": ResolvedModel fields}."""
    if value is None:
        return None
    if isinstance(value, str):
        return ModelSpec(source=value)
    if isinstance(value, Mapping) and set(value) == {"resolved"} and isinstance(value["resolved"], Mapping):
        fields = dict(value["resolved"])
        bad = sorted(set(fields) ^ RESOLVED_KEYS)
        if bad:
            raise ConfigError(
                f"{where}.resolved: expected the keys {sorted(RESOLVED_KEYS)}, differs in {bad}"
            )
        return ResolvedModel(**{**fields, "path": Path(fields["path"])})
    if isinstance(value, Mapping):
        return from_dict(ModelSpec, value, where)
    raise ConfigError(f"{where}: expected a model source string or a ModelSpec mapping, got {value!r}")


def run_in_process(job: TrainingJob) -> TrainResult:
    """Run `job` in this process (also what each torchrun rank does)."""
    if job.stage == "teacher_sft":
        assert job.teacher is not None  # __post_init__
        return train_teacher_sft(job.train, job.teacher, job.data, validation=job.validation)
    assert job.student is not None  # __post_init__
    return distill_student(job.train, job.student, job.teacher, job.data, validation=job.validation)


def training_processes(gpus: int) -> int:
    """Processes per node for a training step whose config says `cluster.gpus: gpus` (one per GPU, >= 1).

    The training steps always run this many processes, on their GPUs or, in a pod without them, on the CPU
    with gloo: the global batch (and so the trained model) depends on `cluster.gpus` only.
    """
    if gpus < 0:
        raise ValueError(f"cluster.gpus must be >= 0, got {gpus}")
    return max(1, gpus)


def run_training(job: TrainingJob, processes: int = 1) -> TrainResult:
    """Run `job` on `processes` data-parallel processes: in this process when 1 (or when this process is
    already one rank of a torchrun launch), else through torchrun (see the module doc)."""
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    if processes == 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return run_in_process(job)
    return launch_torchrun(job, processes)


def _check_devices(processes: int) -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() < processes:
        raise RuntimeError(
            f"cluster.gpus asks for {processes} training processes, one per GPU, but this pod sees "
            f"{torch.cuda.device_count()} CUDA device(s); request as many GPUs as processes"
        )


def torchrun_command(job_file: str | Path, processes: int) -> list[str]:
    """The child's command line: one node, `processes` ranks, a free rendezvous port (`--standalone`)."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
        f"--nproc-per-node={processes}", "-m", "otdistill.training", str(job_file),
    ]  # fmt: skip


def child_env(processes: int) -> dict[str, str]:
    """This process's environment, plus: the step's MLflow run and server for rank 0, this otdistill on the
    import path, and a share of the CPUs per rank unless OMP_NUM_THREADS is set."""
    env = dict(os.environ)
    import mlflow

    active = mlflow.active_run()
    if active is not None:
        env[STEP_RUN_ENV] = active.info.run_id
        env["MLFLOW_TRACKING_URI"] = mlflow.get_tracking_uri()
    package_root = str(Path(__file__).resolve().parents[2])
    if package_root not in _site_dirs():  # a source tree: the child imports this otdistill, not another
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    if "OMP_NUM_THREADS" not in env:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        env["OMP_NUM_THREADS"] = str(max(1, cpus // processes))
    return env


def _site_dirs() -> set[str]:
    """Installed-package directories (put ahead of the standard library, they could shadow it)."""
    import site

    dirs = [*site.getsitepackages(), site.getusersitepackages()]
    return {str(Path(d).resolve()) for d in dirs}


def launch_torchrun(job: TrainingJob, processes: int) -> TrainResult:
    """Run `job` under torchrun on `processes` ranks and wait; rank 0's `TrainResult` (see the module doc)."""
    _check_devices(processes)
    with tempfile.TemporaryDirectory(prefix="otdistill-job-") as tmp:
        job_file = Path(tmp) / "job.yaml"
        job_file.write_text(yaml.safe_dump(job.to_dict(), sort_keys=False), encoding="utf-8")
        cmd = torchrun_command(job_file, processes)
        log.info("%s: launching %s training processes: %s", job.stage, processes, " ".join(cmd))
        returncode, tail = _run_echoing(cmd, child_env(processes))
    if returncode != 0:
        raise DistributedTrainingError(processes, returncode, tail)
    result_dir = Path(job.train.output_dir) / MODEL_DIR
    try:
        return TrainResult.load(result_dir)
    except FileNotFoundError:
        raise DistributedTrainingError(
            processes, returncode, f"(it exited 0 but wrote no result in {result_dir})\n{tail}"
        ) from None


def _run_echoing(cmd: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run `cmd`, copying its output (stdout and stderr) to our stderr; its exit code and last lines.

    Anything that interrupts the wait (SIGTERM raised as an exception by the step run, Ctrl-C) stops the
    child first: SIGTERM (torchrun passes it to the ranks), then SIGKILL after `STOP_GRACE_S`.
    """
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stderr.write(line)
            tail.append(line)
        returncode = proc.wait()
    except BaseException:
        _stop(proc)
        raise
    return returncode, "".join(tail).rstrip()


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def attached_step_run() -> Iterator[None]:
    """In a launched child's rank 0: the launching step's MLflow run (`STEP_RUN_ENV`) is the active run, so
    the trainer's metrics and records land in it. The run is left RUNNING: the step ends it."""
    run_id = os.environ.get(STEP_RUN_ENV, "").strip()
    if not run_id or int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    import mlflow

    mlflow.start_run(run_id=run_id)
    try:
        yield
    finally:
        # end_run would set the status; the step owns it (it may still fail, or be killed, after us)
        mlflow.end_run(status="RUNNING")
