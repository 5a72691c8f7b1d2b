"""Logging the distilled student to MLflow as a transformers model.

The student is logged with ``mlflow.transformers.log_model(..., task="text-generation")`` and an explicit
`pip_requirements` list: MLflow's requirement inference imports and runs the model in a subprocess, which is
slow and pins whatever happens to be installed. The list pins the runtime's own versions of the packages
the model needs to load and generate, without local build suffixes (``torch==2.13.0``, not ``+cu128``), so
the same requirements serve CPU and GPU hosts.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import mlflow
from mlflow.models.model import ModelInfo

from otdistill.tracking.connection import TrackingError
from otdistill.tracking.runs import TrackedRun

log = logging.getLogger(__name__)

# The generation parameters a serving client may pass per request (MLflow signature params), with the
# defaults the evaluation step uses: greedy decoding.
GENERATION_PARAMS: dict[str, int | float | bool] = {
    "max_new_tokens": 128,
    "do_sample": False,
    "temperature": 1.0,
    "top_p": 1.0,
    "repetition_penalty": 1.0,
}


def student_signature() -> mlflow.models.ModelSignature:
    """Text in, text out, with `GENERATION_PARAMS` as the signature's inference params."""
    return mlflow.models.infer_signature(
        model_input=["prompt"], model_output=["generated text"], params=dict(GENERATION_PARAMS)
    )


STUDENT_ARTIFACT_NAME = "student"
STUDENT_RUNTIME_PACKAGES: tuple[str, ...] = (
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


def log_student_model(
    run: TrackedRun,
    model_dir: str | Path,
    *,
    artifact_name: str = STUDENT_ARTIFACT_NAME,
    pip_requirements: Sequence[str] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> ModelInfo:
    """Log the Hugging Face model in `model_dir` (config, safetensors, tokenizer) to `run`.

    `run` must be MLflow's active run (the `step_run` block that produced the model): MLflow logs models
    to the active run only. Returns MLflow's `ModelInfo`; its ``model_uri`` is what the registry takes.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

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
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    requirements = list(pip_requirements) if pip_requirements is not None else student_pip_requirements()
    info = mlflow.transformers.log_model(
        {"model": model, "tokenizer": tokenizer},
        name=artifact_name,
        task="text-generation",
        signature=student_signature(),
        pip_requirements=requirements,
        metadata=dict(metadata) if metadata else None,
    )
    log.info("logged student %s to run %s as %s", path.name, run.run_id, info.model_uri)
    return info
