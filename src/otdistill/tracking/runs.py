"""One MLflow parent run per pipeline run, one nested run per step.

Kubeflow runs each step in its own pod, so the parent run cannot live in one Python context: the first step
opens it (`open_pipeline_run`, idempotent per Kubeflow run id so a retried step finds the same run), passes
its run id on, later steps `attach_pipeline_run` and wrap their work in `step_run`, and the pipeline's exit
handler calls `close_pipeline_run` whatever happened. `start_pipeline_run` does all of it in one process
(local runs, tests).

A step run is also MLflow's active run inside its ``with`` block, so code that logs with the fluent API
(``mlflow.log_metric``, the transformers MLflow callback) lands in the step's run. Every run ends: a step
run ends FINISHED, FAILED (the error in the tag `otdistill.error`) or KILLED (SIGTERM: pod eviction,
deadline, cancellation; Ctrl-C); a step process killed outright (SIGKILL, out of memory) leaves its run
RUNNING, and `close_pipeline_run` ends it KILLED and ends the parent FINISHED, FAILED (with the failing
step and its error as tags) or KILLED.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient

from otdistill.tracking.config import TrackingConfig
from otdistill.tracking.connection import TrackingError, tracking_client
from otdistill.tracking.metric_buffer import FLUSH_TIMEOUT_S, close_run_buffer

log = logging.getLogger(__name__)

PIPELINE_RUN_ID_TAG = "otdistill.pipeline_run_id"
# The run's tracking settings (JSON) on the parent run: cached steps read them there, not from an input.
TRACKING_CONFIG_TAG = "otdistill.tracking_config"
ROLE_TAG = "otdistill.role"
STEP_TAG = "otdistill.step"
# Why a run did not finish: on a step run, its own error; on the parent, the failing step's.
ERROR_TAG = "otdistill.error"
FAILED_STEP_TAG = "otdistill.failed_step"
# The pipeline's final state as the exit handler got it from KFP (SUCCEEDED, FAILED, CANCELLED).
KFP_STATE_TAG = "otdistill.kfp_state"
MAX_ERROR_CHARS = 4000  # MLflow allows 8000 characters in a tag value
ORPHANED_ERROR = (
    "the step's process ended without closing its run (killed: out of memory, node lost, or SIGKILL "
    "after the termination grace period); closed by the pipeline's exit handler"
)
# MLflow caps a param value at 6000 characters and a log_batch call at 100 params / 1000 metrics.
MAX_PARAM_CHARS = 6000
MAX_BATCH_PARAMS = 100
MAX_BATCH_METRICS = 1000
# How long a failing step waits for its buffered metrics (they show what led to the failure); after SIGTERM
# only a moment of the pod's grace period is spent on them.
FAILED_FLUSH_TIMEOUT_S = 30.0
KILLED_FLUSH_TIMEOUT_S = 5.0
SYSTEM_METRICS_INTERVAL_ENV = "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"


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
        return tracking_client(self.config, connect=False)

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
    client = tracking_client(config)
    experiment_id = _experiment_id(client, config.experiment, config.artifact_location)
    if pipeline_run_id:
        run = _find_pipeline_run(client, experiment_id, pipeline_run_id)
        if run is not None:
            log.info("reusing parent run %s for pipeline run %s", run.info.run_id, pipeline_run_id)
            return PipelineRun(run.info.run_id, experiment_id, config)
    all_tags = {
        ROLE_TAG: "pipeline",
        TRACKING_CONFIG_TAG: _tracking_json(config),
        **(dict(tags) if tags else {}),
    }
    if pipeline_run_id:
        all_tags[PIPELINE_RUN_ID_TAG] = pipeline_run_id
    run = client.create_run(experiment_id, run_name=run_name, tags={k: str(v) for k, v in all_tags.items()})
    parent = PipelineRun(run.info.run_id, experiment_id, config)
    if params:
        parent.log_params(params)
    log.info("opened parent run %s in experiment %s", parent.run_id, config.experiment)
    return parent


def _find_pipeline_run(client: MlflowClient, experiment_id: str, pipeline_run_id: str) -> Any | None:
    found = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`{PIPELINE_RUN_ID_TAG}` = '{pipeline_run_id}' and tags.`{ROLE_TAG}` = 'pipeline'"
        ),
        max_results=1,
    )
    return found[0] if found else None


def _tracking_json(config: TrackingConfig) -> str:
    return json.dumps(dataclasses.asdict(config), sort_keys=True)


def _recorded_tracking(run: Any, connection: TrackingConfig) -> TrackingConfig:
    """The tracking settings `open_pipeline_run` recorded on the parent `run`, reached via `connection`.

    The server address stays the one this process reached the run through (the recorded one may be empty,
    meaning "the environment's", or name the server as another network sees it).
    """
    text = run.data.tags.get(TRACKING_CONFIG_TAG)
    if not text:
        return connection
    recorded = TrackingConfig(**json.loads(text))
    return dataclasses.replace(
        recorded,
        tracking_uri=connection.resolved_tracking_uri(),
        registry_uri=recorded.registry_uri or connection.registry_uri,
    )


def find_pipeline_run(connection: TrackingConfig, pipeline_run_id: str) -> PipelineRun | None:
    """The parent run of `pipeline_run_id` in any experiment, with the tracking settings recorded on it.

    For steps that are not given the run's tracking section (it would enter their cache key): they know
    the server (`connection`, from the environment) and the pipeline run id, and `open_run` has opened the
    parent run. None when no experiment holds it.
    """
    client = tracking_client(connection)
    experiment_ids: list[str] = []
    page_token = None
    while True:
        page = client.search_experiments(max_results=1000, page_token=page_token)
        experiment_ids += [str(e.experiment_id) for e in page]
        page_token = page.token
        if not page_token:
            break
    for start in range(0, len(experiment_ids), 100):
        found = client.search_runs(
            experiment_ids[start : start + 100],
            filter_string=(
                f"tags.`{PIPELINE_RUN_ID_TAG}` = '{pipeline_run_id}' and tags.`{ROLE_TAG}` = 'pipeline'"
            ),
            max_results=1,
        )
        if found:
            run = found[0]
            return PipelineRun(run.info.run_id, run.info.experiment_id, _recorded_tracking(run, connection))
    return None


def attach_pipeline_run(config: TrackingConfig, run_id: str) -> PipelineRun:
    """The parent run opened by an earlier step (in another pod), after checking that it exists."""
    client = tracking_client(config)
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
    """Open the parent run for the block; it ends FINISHED, or FAILED if the block raises (the block's
    error propagates even when ending the run fails too, e.g. because the server is down)."""
    parent = open_pipeline_run(config, run_name, pipeline_run_id=pipeline_run_id, params=params, tags=tags)
    try:
        yield parent
    except BaseException:
        try:
            finish_pipeline_run(parent, "FAILED")
        except Exception:
            log.warning("could not end parent run %s as FAILED", parent.run_id, exc_info=True)
        raise
    finish_pipeline_run(parent, "FINISHED")


class StepTerminated(SystemExit):
    """SIGTERM arrived in a step's main thread (pod evicted or deleted, deadline exceeded, run cancelled).

    A SystemExit with the shell's code for SIGTERM (143), so the step process exits as terminated after
    `step_run` has ended its run KILLED. On Kubernetes the main container's PID 1 (Argo's emissary) forwards
    SIGTERM to the step's whole process group, so the Python process gets it directly.
    """

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)

    def __str__(self) -> str:
        return "terminated by SIGTERM (pod evicted or deleted, deadline exceeded, or run cancelled)"


def error_text(exc: BaseException) -> str:
    """`Type: message` of an exception, cut to what an MLflow tag holds."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Inside the block, SIGTERM raises `StepTerminated` in the main thread (elsewhere: unchanged)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise StepTerminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _end_step(step: StepRun, status: str, error: str) -> None:
    """End the active step run with `status` and its error tag; a tracking outage cannot mask the error.

    Every call to the server here is guarded: what fails is logged as a warning, and the step's own error
    is what propagates. The metrics buffered before the failure get a short, bounded flush.
    """

    def tag() -> None:
        try:
            step.set_tags({ERROR_TAG: error})
        except Exception:
            log.warning("could not record the error on step run %s", step.run_id, exc_info=True)

    def flush(timeout_s: float) -> None:
        try:
            close_run_buffer(step.run_id, timeout_s, strict=False)
        except Exception:
            log.warning("could not send the buffered metrics of step run %s", step.run_id, exc_info=True)

    if status != "KILLED":  # after SIGTERM the pod may be gone soon: the status first, then the rest
        flush(FAILED_FLUSH_TIMEOUT_S)
        tag()
    try:
        mlflow.end_run(status=status)
    except Exception:
        log.warning("could not end step run %s as %s", step.run_id, status, exc_info=True)
    if status == "KILLED":
        tag()
        flush(KILLED_FLUSH_TIMEOUT_S)


@contextmanager
def _system_metrics_interval(seconds: float) -> Iterator[None]:
    """MLflow's system-metrics monitor reads its sampling interval from the environment when a run
    starts, and nowhere else: set it for that moment only (a value the environment already sets wins)."""
    if seconds <= 0 or SYSTEM_METRICS_INTERVAL_ENV in os.environ:
        yield
        return
    os.environ[SYSTEM_METRICS_INTERVAL_ENV] = f"{seconds:g}"
    try:
        yield
    finally:
        os.environ.pop(SYSTEM_METRICS_INTERVAL_ENV, None)


@contextmanager
def step_run(
    parent: PipelineRun,
    name: str,
    *,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
) -> Iterator[StepRun]:
    """A nested run for one step under `parent`, MLflow's active run inside the block.

    It samples MLflow's system metrics (``system/...``: CPU, memory, disk, network, GPU where NVML finds
    one) every `TrackingConfig.system_metrics_interval_s` in a background thread that stops when the run
    ends. Checks the server first (bounded, see `preflight`); ends FINISHED, FAILED if the block raises (the
    error in the tag `otdistill.error`), or KILLED on SIGTERM (raised as `StepTerminated`, a SystemExit
    with code 143, while the block runs in the main thread) or Ctrl-C.
    """
    tracking_client(parent.config)
    all_tags = {STEP_TAG: name, ROLE_TAG: "step", **(dict(tags) if tags else {})}
    interval = parent.config.system_metrics_interval_s
    with _system_metrics_interval(interval):
        active = mlflow.start_run(
            experiment_id=parent.experiment_id,
            run_name=name,
            parent_run_id=parent.run_id,
            nested=True,
            tags={k: str(v) for k, v in all_tags.items()},
            log_system_metrics=interval > 0,
        )
    step = StepRun(
        active.info.run_id, parent.experiment_id, parent.config, name=name, parent_run_id=parent.run_id
    )
    with _sigterm_raises():
        try:
            if params:
                step.log_params(params)
            yield step
            # The training metrics still buffered go first; if the server never takes them, the step
            # fails (UnsentMetricsError) instead of ending FINISHED with a gap in its curves.
            close_run_buffer(step.run_id, FLUSH_TIMEOUT_S)
        except (StepTerminated, KeyboardInterrupt) as exc:
            _end_step(step, RunStatus.to_string(RunStatus.KILLED), error_text(exc))
            raise
        except BaseException as exc:
            _end_step(step, RunStatus.to_string(RunStatus.FAILED), error_text(exc))
            raise
        mlflow.end_run(status=RunStatus.to_string(RunStatus.FINISHED))


@dataclass(frozen=True)
class ClosedPipelineRun:
    """What `close_pipeline_run` did: the parent's final status, why, and the step runs it ended."""

    run_id: str
    status: str
    failed_step: str = ""
    error: str = ""
    killed_steps: tuple[str, ...] = ()


def _final_status(kfp_state: str) -> str:
    state = kfp_state.strip().upper()
    if state == "SUCCEEDED":
        return "FINISHED"
    if state in ("CANCELLED", "CANCELED", "CANCELING"):
        return "KILLED"
    return "FAILED"


def close_pipeline_run(
    config: TrackingConfig,
    pipeline_run_id: str,
    kfp_state: str,
    *,
    kfp_task: str = "",
    kfp_error: str = "",
) -> ClosedPipelineRun | None:
    """End the parent run of `pipeline_run_id` and every step run of it still open (the exit handler).

    kfp_state: the pipeline's final state from KFP (`dsl.PipelineTaskFinalStatus.state`): SUCCEEDED ends
    the parent FINISHED, CANCELLED ends it KILLED, anything else FAILED. A step run still RUNNING lost its
    process without ending it (SIGKILL, out of memory) and ends KILLED. When the parent does not finish,
    the tags `otdistill.failed_step` and `otdistill.error` name the step run that failed first (by end time)
    and its error; when no step run failed (the step broke before opening one), they hold KFP's task name
    and error message (`kfp_task`, `kfp_error`). Returns None when there is no parent run (the run failed
    before `open_run` opened it): nothing is left running then.
    """
    client = tracking_client(config)
    experiment = client.get_experiment_by_name(config.experiment)
    parent = (
        _find_pipeline_run(client, experiment.experiment_id, pipeline_run_id)
        if experiment is not None
        else None
    )
    if parent is None:
        log.warning(
            "no MLflow parent run for pipeline run %s in experiment %r: nothing to close",
            pipeline_run_id,
            config.experiment,
        )
        return None
    parent_id = parent.info.run_id
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'"
    )
    killed = []
    for run in children:
        if run.info.status in ("RUNNING", "SCHEDULED"):
            client.set_tag(run.info.run_id, ERROR_TAG, ORPHANED_ERROR)
            client.set_terminated(run.info.run_id, status="KILLED")
            killed.append(run.data.tags.get(STEP_TAG, run.info.run_id))
            log.warning("step run %s (%s) was still open: ended KILLED", run.info.run_id, killed[-1])
    status = _final_status(kfp_state)
    failed_step = error = ""
    if status != "FINISHED":
        ended = [r for r in children if r.info.status in ("FAILED", "KILLED")]
        first = min(ended, key=lambda r: r.info.end_time or 0) if ended else None
        if first is not None:
            failed_step = first.data.tags.get(STEP_TAG, first.info.run_id)
            error = first.data.tags.get(ERROR_TAG, "")
        elif killed:
            failed_step, error = killed[0], ORPHANED_ERROR
        else:
            failed_step = kfp_task or "unknown"
            error = kfp_error or "the pipeline failed outside any step run (see the KFP task logs)"
        error = error or "(the step recorded no error)"
    tags = {KFP_STATE_TAG: kfp_state}
    if status != "FINISHED":
        tags.update({FAILED_STEP_TAG: failed_step, ERROR_TAG: error[:MAX_ERROR_CHARS]})
    client.log_batch(parent_id, tags=[RunTag(k, v) for k, v in tags.items()])
    client.set_terminated(parent_id, status=status)
    log.info(
        "parent run %s ended %s%s", parent_id, status, f" ({failed_step}: {error})" if failed_step else ""
    )
    return ClosedPipelineRun(parent_id, status, failed_step, error, tuple(killed))
