"""Logging the distilled student to MLflow as a model that serves its task.

The student is logged with ``mlflow.pyfunc.log_model`` as an `otdistill.tracking.serving.StudentModel`: its
Hugging Face directory (config, safetensors, tokenizer: the saved files as they are, so logging never loads
the weights a second time) as the pyfunc artifact ``hf``, and the prompt format
it was trained and evaluated with (`PromptFormat`: task, template, the evaluation's generation settings) as
the pyfunc ``model_config``. Loaded with ``mlflow.pyfunc.load_model`` or served with ``mlflow models serve``
it takes the task's raw input fields and returns the answer alone, decoded as the evaluation step decoded it.
Its signature names the input fields, one string output, and the generation params; `input_example` is one
raw input row.

The requirements are an explicit `pip_requirements` list: MLflow's requirement inference imports and runs
the model in a subprocess, which is slow and pins whatever happens to be installed. The list pins the
runtime's own versions of the packages the model needs to load and generate, otdistill itself included
(the serving code is its), without local build suffixes (``torch==2.13.0``, not ``+cu128``), so the same
requirements serve CPU and GPU hosts.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow.models.model import ModelInfo

from otdistill.tracking.connection import TrackingError
from otdistill.tracking.runs import TrackedRun

if TYPE_CHECKING:
    from otdistill.data import Task
    from otdistill.evaluation import EvalConfig

log = logging.getLogger(__name__)

STUDENT_ARTIFACT_NAME = "student"
# The Trainer's state files, which a model directory holds when it is a checkpoint; serving needs none.
TRAINER_STATE_FILES = frozenset(
    {"trainer_state.json", "training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth"}
)
STUDENT_RUNTIME_PACKAGES: tuple[str, ...] = (
    "otdistill",
    "mlflow",
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "accelerate",
)


def student_pip_requirements(packages: Sequence[str] = STUDENT_RUNTIME_PACKAGES) -> list[str]:
    """``name==version`` for each package as installed now, local version suffixes dropped."""
    reqs = []
    for name in packages:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError as exc:
            raise TrackingError(f"cannot pin {name!r} for the logged model: it is not installed") from exc
        reqs.append(f"{name}=={version.split('+', 1)[0]}")
    return reqs


def _link_model_files(model_dir: Path, dst: Path) -> None:
    """Put the files of `model_dir` that loading needs into `dst`, byte for byte, without reading them:
    hard links (a copy across file systems). Left out: subdirectories (checkpoints), the Trainer's state,
    and the pipeline's records beside the model (the training result with its step history, the Model
    artifact's record and reference)."""
    from otdistill.steps.common import MODEL_INFO, MODEL_REF
    from otdistill.training.runner import RESULT_FILE

    skip = TRAINER_STATE_FILES | {MODEL_INFO, MODEL_REF, RESULT_FILE}
    dst.mkdir(parents=True)
    for item in sorted(model_dir.iterdir()):
        if not item.is_file() or item.name in skip:
            continue
        try:
            os.link(item, dst / item.name)
        except OSError:
            shutil.copy2(item, dst / item.name)


def log_student_model(
    run: TrackedRun,
    model_dir: str | Path,
    *,
    task: str | Task,
    input_example: Mapping[str, Any],
    eval_config: EvalConfig | None = None,
    artifact_name: str = STUDENT_ARTIFACT_NAME,
    pip_requirements: Sequence[str] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> ModelInfo:
    """Log the Hugging Face model in `model_dir` (config, safetensors, tokenizer) to `run` as a served
    student of `task` (a registered task name or a `Task`).

    input_example: one raw row of the task (its `Task.input_fields` are kept): the model's input example,
      and the example whose prompt is recorded and checked again whenever the model is loaded.
    eval_config: the evaluation settings the student was scored with (``max_new_tokens``,
      ``max_prompt_tokens``, ``batch_size``, ``dtype``): the served defaults; `EvalConfig()` when None.

    `run` must be MLflow's active run (the `step_run` block that produced the model): MLflow logs models
    to the active run only. Returns MLflow's `ModelInfo`; its ``model_uri`` is what the registry takes.
    """
    from otdistill.data import get_task
    from otdistill.evaluation import EvalConfig
    from otdistill.models import ResolvedModel, load_tokenizer
    from otdistill.tracking.serving import HF_ARTIFACT, PromptFormat

    path = Path(model_dir)
    missing = [name for name in ("config.json", "tokenizer_config.json") if not (path / name).is_file()]
    if missing or not any(path.glob("*.safetensors")):
        raise FileNotFoundError(
            f"{path} is not a Hugging Face model directory (missing: {', '.join(missing) or '*.safetensors'})"
        )
    active = mlflow.active_run()
    if active is None or active.info.run_id != run.run_id:
        raise TrackingError(
            f"log_student_model must be called inside the step_run block of run {run.run_id} "
            f"(active run: {active.info.run_id if active else 'none'})"
        )
    task_obj = get_task(task) if isinstance(task, str) else task
    resolved = ResolvedModel(path, str(path), "local", "")
    tokenizer = load_tokenizer(resolved)
    prompt_format = PromptFormat.build(task_obj, tokenizer, eval_config or EvalConfig(), input_example)
    requirements = list(pip_requirements) if pip_requirements is not None else student_pip_requirements()
    with tempfile.TemporaryDirectory(prefix="otdistill-student-") as tmp:
        hf_dir = Path(tmp) / HF_ARTIFACT
        _link_model_files(path, hf_dir)
        info = mlflow.pyfunc.log_model(
            name=artifact_name,
            python_model=str(Path(__file__).with_name("student_pyfunc.py")),
            artifacts={HF_ARTIFACT: str(hf_dir)},
            model_config=prompt_format.to_dict(),
            signature=prompt_format.signature(),
            input_example=prompt_format.input_frame(),
            pip_requirements=requirements,
            metadata={"otdistill.task": task_obj.name, **(dict(metadata) if metadata else {})},
        )
    log.info("logged student %s (%s) to run %s as %s", path.name, task_obj.name, run.run_id, info.model_uri)
    return info
