"""Run the whole DAG on this machine: kfp.local's SubprocessRunner (no Docker) + MLflow on SQLite.

Everything of a local run lives under one run directory (default `runs/<config name>`):

    kfp/          KFP task outputs (datasets, models, reports) per run and task
    kfp-cache/    KFP's step cache: a re-run reuses every step whose inputs did not change
    mlflow.db     the MLflow tracking + registry store (SQLite)
    mlartifacts/  MLflow artifacts (configs, reports, the registered student)
    logs/         one log per run: everything kfp.local and the steps printed (the terminal shows step lines)
    config.yaml   the config as run
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from otdistill.config import RunConfig
from otdistill.pipelines.containers import existing_local_path
from otdistill.pipelines.otdistill_pipeline import build_pipeline
from otdistill.run_console import run_console
from otdistill.steps.common import COMPONENT_IMAGE, RUN_ID_ENV
from otdistill.tracking import TrackingConfig, configure_client
from otdistill.tracking.connection import tracking_client
from otdistill.tracking.metric_names import eval_metric
from otdistill.tracking.runs import PIPELINE_RUN_ID_TAG, ROLE_TAG

log = logging.getLogger("otdistill.local")
LABELS = (
    ("teacher", "teacher"),
    ("sft_baseline", "SFT baseline student"),
    ("base_student", "untuned student"),
    ("distilled", "distilled student"),
)


@dataclass
class LocalRunResult:
    """Where a local run put things and what it found: enough to print, and for tests to check."""

    run_dir: Path
    tracking_uri: str
    artifact_root: Path
    pipeline_run_id: str
    mlflow_run_id: str
    experiment_id: str
    metric: str
    scores: dict[str, float] = field(default_factory=dict)
    model_uri: str = ""
    champion_uri: str = ""
    status: str = ""
    reason: str = ""
    seconds: float = 0.0
    log_path: Path | None = None

    def summary(self) -> str:
        lines = [f"otdistill run finished in {self.seconds / 60:.1f} min ({self.run_dir})", ""]
        for label, title in LABELS:
            if label in self.scores:
                lines.append(f"  {title:<22} {self.metric} = {self.scores[label]:.4f}")
        lines += [
            "",
            f"  MLflow run:        {self.mlflow_run_id} (experiment {self.experiment_id})",
            f"  registered model:  {self.model_uri} -> {self.status}: {self.reason}",
            f"  champion:          {self.champion_uri}",
            *([f"  step logs:         {self.log_path}"] if self.log_path else []),
            "",
            "  see it in the MLflow UI:",
            f"    {self.tracking_uri}/#/experiments/{self.experiment_id}"
            if _is_server(self.tracking_uri)
            else f"    mlflow ui --backend-store-uri {self.tracking_uri}"
            f" --default-artifact-root {self.artifact_root}",
        ]
        return "\n".join(lines)


def _is_server(tracking_uri: str) -> bool:
    """A tracking server (http[s]://) keeps its own artifact store; a local store gets the run dir's."""
    return tracking_uri.startswith(("http://", "https://"))


def _absolute_local_source(source: str) -> str:
    """A relative local path becomes absolute (steps run as subprocesses; cache keys stay stable)."""
    path = existing_local_path(source)
    return str(path) if path is not None else source


def local_config(cfg: RunConfig, run_dir: Path) -> RunConfig:
    """`cfg` adapted to this machine: SQLite MLflow under `run_dir`, absolute local paths, a Python image."""
    tracking_uri = cfg.tracking.tracking_uri or f"sqlite:///{run_dir / 'mlflow.db'}"
    return dataclasses.replace(
        cfg,
        teacher=dataclasses.replace(cfg.teacher, source=_absolute_local_source(cfg.teacher.source)),
        student=dataclasses.replace(cfg.student, source=_absolute_local_source(cfg.student.source)),
        data=dataclasses.replace(cfg.data, source=_absolute_local_source(cfg.data.source)),
        tracking=dataclasses.replace(cfg.tracking, tracking_uri=tracking_uri),
        # No CUDA image (nor GPU) on a local run: every step runs in the CPU image (`--runner docker`).
        cluster=dataclasses.replace(cfg.cluster, image=COMPONENT_IMAGE, gpu_image=COMPONENT_IMAGE),
    )


def _ensure_experiment(tracking: TrackingConfig, artifact_root: Path) -> str:
    """Create the experiment: on a local store with its artifacts under the run directory (MLflow's default
    is ./mlruns), on a tracking server in the server's own artifact store (S3 behind `--serve-artifacts`)."""
    import mlflow

    configure_client(tracking)
    exp = mlflow.get_experiment_by_name(tracking.experiment)
    if exp is not None:
        return str(exp.experiment_id)
    if _is_server(tracking.tracking_uri):
        return str(mlflow.create_experiment(tracking.experiment))
    artifact_root.mkdir(parents=True, exist_ok=True)
    return str(mlflow.create_experiment(tracking.experiment, artifact_location=artifact_root.as_uri()))


def _collect(result: LocalRunResult, tracking: TrackingConfig) -> None:
    from mlflow.exceptions import MlflowException

    client = tracking_client(tracking, connect=False)
    runs = client.search_runs(
        [result.experiment_id],
        filter_string=(
            f"tags.`{PIPELINE_RUN_ID_TAG}` = '{result.pipeline_run_id}' and tags.`{ROLE_TAG}` = 'pipeline'"
        ),
    )
    if not runs:
        raise RuntimeError(f"no MLflow parent run for pipeline run {result.pipeline_run_id}")
    parent = runs[0]
    result.mlflow_run_id = parent.info.run_id
    for label, _ in LABELS:
        value = parent.data.metrics.get(eval_metric(label, result.metric))
        if value is not None:
            result.scores[label] = float(value)
    tags = parent.data.tags
    result.model_uri = tags.get("otdistill.model_uri", "")
    result.status = tags.get("otdistill.promotion.status", "")
    result.reason = tags.get("otdistill.promotion.reason", "")
    name, alias = tracking.registered_model_name, tracking.champion_alias
    try:
        holder = client.get_model_version_by_alias(name, alias)
        result.champion_uri = f"models:/{name}@{alias} (version {holder.version})"
    except MlflowException:
        result.champion_uri = f"none yet (no version of {name} holds @{alias})"


RUNNERS = ("subprocess", "docker")


def run_local(
    cfg: RunConfig,
    run_dir: str | Path | None = None,
    *,
    fresh: bool = False,
    runner: str = "subprocess",
    terminal: TextIO | None = None,
    resume: str | None = None,
    build: Callable[[RunConfig], Any] = build_pipeline,
) -> LocalRunResult:
    """Execute the whole pipeline for `cfg` with kfp.local; returns what it produced.

    runner: "subprocess" runs each step as a child process of this one (this environment's packages);
      "docker" runs each step in the project's CPU image (`containers.py`, built by docker/build-images.sh).
    terminal: where the step lines go (default: stdout); everything kfp.local and the steps print goes to
      `logs/<pipeline run id>.log` under the run directory (`otdistill.run_console`).
    resume: the pipeline run id of an earlier run in this run directory to run again, as KFP retries a
      run: same run id, so the steps resume from that run's checkpoints (`otdistill.steps.resume`) and
      log into its MLflow parent run; its finished steps are step-cache hits (unless `fresh`).
    build: the pipeline of the (local) config: the main DAG, or a sweep's (`sweep_pipeline.py`).
    """
    if runner not in RUNNERS:
        raise ValueError(f"runner must be one of {RUNNERS}, got {runner!r}")
    from kfp import local

    started = time.monotonic()
    root = Path(run_dir) if run_dir else Path(cfg.local.run_root) / cfg.name
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    cfg = local_config(cfg, root)
    (root / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    artifact_root = root / "mlartifacts"
    pipeline_run_id = resume or f"local-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    if resume and not (root / "logs" / f"{resume}.log").is_file():
        raise ValueError(
            f"cannot resume run {resume!r}: no run with that id in {root} (no logs/{resume}.log)"
        )
    log_path = root / "logs" / f"{pipeline_run_id}.log"
    with run_console(log_path, pipeline_run_id, terminal=terminal) as console:
        experiment_id = _ensure_experiment(cfg.tracking, artifact_root)
        # Every step finds the parent MLflow run by this id (on clusters it comes from the pod label).
        os.environ[RUN_ID_ENV] = pipeline_run_id
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        if runner == "docker":
            from otdistill.pipelines.containers import docker_runner

            kfp_runner = docker_runner(cfg, root, pipeline_run_id)
        else:
            kfp_runner = local.SubprocessRunner(use_venv=False)
        local.init(
            runner=kfp_runner,
            pipeline_root=str(root / "kfp"),
            raise_on_error=True,
            enable_caching=cfg.steps.enable_caching and not fresh,
            cache_root=str(root / "kfp-cache"),
        )
        log.info("local run %s in %s (MLflow: %s)", pipeline_run_id, root, cfg.tracking.tracking_uri)
        pipeline = build(cfg)
        console.expect_steps(pipeline)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*non-Python base image.*")
            pipeline()
        result = LocalRunResult(
            run_dir=root,
            tracking_uri=cfg.tracking.tracking_uri,
            artifact_root=artifact_root,
            pipeline_run_id=pipeline_run_id,
            mlflow_run_id="",
            experiment_id=experiment_id,
            metric=cfg.tracking.promotion_metric,
            log_path=log_path,
        )
        _collect(result, cfg.tracking)
    result.seconds = time.monotonic() - started
    return result
