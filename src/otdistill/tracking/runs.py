"""One MLflow parent run per pipeline run, one nested run per step.

Kubeflow runs each step in its own pod, so the parent run cannot live in one Python context: the first step
opens it (`open_pipeline_run`, idempotent per Kubeflow run id so a retried step finds the same run), passes
its run id on, later steps `attach_pipeline_run` and wrap their work in `step_run`, and the last step calls
`finish_pipeline_run`. `start_pipeline_run` does all of it in one process (local runs, tests).

A step run is also MLflow's active run inside its ``with`` block, so code that logs with the fluent API
(``mlflow.log_metric``, the transformers MLflow callback) lands in the step's run.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient

from otdistill.tracking.config import TrackingConfig
from otdistill.tracking.connection import TrackingError, configure_client, preflight

log = logging.getLogger(__name__)

PIPELINE_RUN_ID_TAG = "otdistill.pipeline_run_id"
ROLE_TAG = "otdistill.role"
STEP_TAG = "otdistill.step"
# MLflow caps a param value at 6000 characters and a log_batch call at 100 params / 1000 metrics.
MAX_PARAM_CHARS = 6000
MAX_BATCH_PARAMS = 100
MAX_BATCH_METRICS = 1000


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> ``{"train.lr": "0.001", ...}`` with values stringified and capped for MLflow."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, prefix=f"{name}."))
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        if len(text) > MAX_PARAM_CHARS:
            text = text[: MAX_PARAM_CHARS - 3] + "..."
        flat[name] = text
    return flat


@dataclass(frozen=True)
class TrackedRun:
    """An MLflow run this package logs to by id, through the client (works from any thread or pod)."""

    run_id: str
    experiment_id: str
    config: TrackingConfig

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(
            tracking_uri=self.config.resolved_tracking_uri() or None,
            registry_uri=self.config.resolved_registry_uri() or None,
        )

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log (nested) parameters, flattened with dotted keys."""
        items = [Param(k, v) for k, v in flatten_params(params).items()]
        for start in range(0, len(items), MAX_BATCH_PARAMS):
            self.client.log_batch(self.run_id, params=items[start : start + MAX_BATCH_PARAMS])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log metrics at `step` (their history over steps is kept); non-finite values are rejected."""
        bad = {k: v for k, v in metrics.items() if not math.isfinite(float(v))}
        if bad:
            raise ValueError(f"refusing to log non-finite metric values: {bad}")
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        for start in range(0, len(items), MAX_BATCH_METRICS):
            self.client.log_batch(self.run_id, metrics=items[start : start + MAX_BATCH_METRICS])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        """Store a JSON/YAML-serialisable object as an artifact (`artifact_file` ending .json or .yaml)."""
        self.client.log_dict(self.run_id, obj, artifact_file)

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        """Upload a file or directory (a data report, an eval report, a plot) to the run's artifacts."""
        path = Path(local_path)
        if not path.exists():
            raise FileNotFoundError(f"artifact to log does not exist: {path}")
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_config(self, config: Mapping[str, Any], artifact_file: str = "config.yaml") -> None:
        """The whole run config as an artifact and as flattened params (searchable in the UI)."""
        self.log_dict(dict(config), artifact_file)
        self.log_params(config)


@dataclass(frozen=True)
class PipelineRun(TrackedRun):
    """The parent run of one pipeline run."""


@dataclass(frozen=True)
class StepRun(TrackedRun):
    """The nested run of one pipeline step."""

    name: str = ""
    parent_run_id: str = ""


def _client(config: TrackingConfig) -> MlflowClient:
    configure_client(config)
    preflight(config)
    return MlflowClient(
        tracking_uri=config.resolved_tracking_uri() or None,
        registry_uri=config.resolved_registry_uri() or None,
    )


def _experiment_id(client: MlflowClient, name: str, artifact_location: str = "") -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    try:
        return str(client.create_experiment(name, artifact_location=artifact_location or None))
    except mlflow.exceptions.MlflowException as exc:
        # Another step created it between our lookup and create.
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise TrackingError(f"cannot create or find MLflow experiment {name!r}: {exc.message}") from exc
        return str(experiment.experiment_id)


def open_pipeline_run(
    config: TrackingConfig,
    run_name: str,
    *,
    pipeline_run_id: str | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
) -> PipelineRun:
    """Create the parent run, or return the existing one tagged with the same `pipeline_run_id`."""
    client = _client(config)
    experiment_id = _experiment_id(client, config.experiment, config.artifact_location)
    if pipeline_run_id:
        found = client.search_runs(
            [experiment_id],
            filter_string=(
                f"tags.`{PIPELINE_RUN_ID_TAG}` = '{pipeline_run_id}' and tags.`{ROLE_TAG}` = 'pipeline'"
            ),
            max_results=1,
        )
        if found:
            run = found[0]
            log.info("reusing parent run %s for pipeline run %s", run.info.run_id, pipeline_run_id)
            return PipelineRun(run.info.run_id, experiment_id, config)
    all_tags = {ROLE_TAG: "pipeline", **(dict(tags) if tags else {})}
    if pipeline_run_id:
        all_tags[PIPELINE_RUN_ID_TAG] = pipeline_run_id
    run = client.create_run(experiment_id, run_name=run_name, tags={k: str(v) for k, v in all_tags.items()})
    parent = PipelineRun(run.info.run_id, experiment_id, config)
    if params:
        parent.log_params(params)
    log.info("opened parent run %s in experiment %s", parent.run_id, config.experiment)
    return parent


def attach_pipeline_run(config: TrackingConfig, run_id: str) -> PipelineRun:
    """The parent run opened by an earlier step (in another pod), after checking that it exists."""
    client = _client(config)
    try:
        run = client.get_run(run_id)
    except mlflow.exceptions.MlflowException as exc:
        raise TrackingError(f"parent run {run_id!r} not found: {exc.message}") from exc
    return PipelineRun(run.info.run_id, run.info.experiment_id, config)


def finish_pipeline_run(parent: PipelineRun, status: str = "FINISHED") -> None:
    """Mark the parent run FINISHED / FAILED / KILLED."""
    if status not in ("FINISHED", "FAILED", "KILLED"):
        raise ValueError(f"status must be FINISHED, FAILED or KILLED, got {status!r}")
    parent.client.set_terminated(parent.run_id, status=status)


@contextmanager
def start_pipeline_run(
    config: TrackingConfig,
    run_name: str,
    *,
    pipeline_run_id: str | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
) -> Iterator[PipelineRun]:
    """Open the parent run for the block; it ends FINISHED, or FAILED if the block raises."""
    parent = open_pipeline_run(config, run_name, pipeline_run_id=pipeline_run_id, params=params, tags=tags)
    try:
        yield parent
    except BaseException:
        finish_pipeline_run(parent, "FAILED")
        raise
    finish_pipeline_run(parent, "FINISHED")


@contextmanager
def step_run(
    parent: PipelineRun,
    name: str,
    *,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
) -> Iterator[StepRun]:
    """A nested run for one step under `parent`, MLflow's active run inside the block.

    Checks the server first (bounded, see `preflight`); ends FINISHED, or FAILED if the block raises.
    """
    _client(parent.config)
    all_tags = {STEP_TAG: name, ROLE_TAG: "step", **(dict(tags) if tags else {})}
    active = mlflow.start_run(
        experiment_id=parent.experiment_id,
        run_name=name,
        parent_run_id=parent.run_id,
        nested=True,
        tags={k: str(v) for k, v in all_tags.items()},
    )
    step = StepRun(
        active.info.run_id, parent.experiment_id, parent.config, name=name, parent_run_id=parent.run_id
    )
    try:
        if params:
            step.log_params(params)
        yield step
    except BaseException:
        mlflow.end_run(status=RunStatus.to_string(RunStatus.FAILED))
        raise
    mlflow.end_run(status=RunStatus.to_string(RunStatus.FINISHED))
