"""Compile the pipeline and talk to a Kubeflow Pipelines API server: runs and recurring runs (schedules).

Authentication is whatever `kfp.Client` supports: a bearer token (`--token` / env KFP_TOKEN), a projected
service-account token file, or nothing inside the cluster (the client then uses the pod's service account).
The token is passed to the client only; it is never logged or printed.

Runs and recurring runs start from a pipeline *version*: the compiled package is uploaded as a version of
the pipeline named like the config (created on first use), so the KFP UI groups every run of a config under
one pipeline, each with the exact package it ran. A version is named by the package's content digest; an
unchanged config re-uses its version instead of uploading it again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfp import compiler

from otdistill import images
from otdistill.config import ConfigError, RunConfig, pipeline_parameter_defaults
from otdistill.pipelines.otdistill_pipeline import PIPELINE_NAME, build_pipeline

log = logging.getLogger("otdistill.submit")

# KFP recurring runs take a 6-field cron: second minute hour day-of-month month day-of-week.
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,\-?LW#]+$")
# kfp's pipeline context is global to the process: one compile at a time.
_COMPILE_LOCK = threading.Lock()
# The KFP run state (V2beta1RuntimeState) of a run that succeeded; `submit --wait` exits 1 on any other.
SUCCEEDED = "SUCCEEDED"
# V2beta1RuntimeState values after which a run changes no more.
FINAL_STATES = frozenset({SUCCEEDED, "FAILED", "SKIPPED", "CANCELED", "ERROR"})


def validate_cron(cron: str) -> str:
    """Reject what KFP would reject later: it needs exactly 6 fields (seconds first)."""
    fields = cron.split()
    if len(fields) != 6 or not all(_CRON_FIELD.match(f) for f in fields):
        hint = f' (did you mean "0 {cron}"?)' if len(fields) == 5 else ""
        raise ConfigError(
            f'cron {cron!r} is not a 6-field KFP cron "second minute hour day month weekday"{hint}'
        )
    return cron


Build = Callable[[RunConfig], Any]  # config -> KFP pipeline: `build_pipeline`, or a sweep's


def compile_pipeline(cfg: RunConfig, output: str | Path, build: Build = build_pipeline) -> Path:
    """Write the KFP pipeline YAML for `cfg` (cluster settings applied) to `output`."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)

    def _compile() -> None:
        compiler.Compiler().compile(build(cfg), package_path=str(output))

    # On a fresh, shallow stack: kfp's PipelineTask calls inspect.stack() for every task setting, whose cost
    # grows with the caller's stack depth (~30 s per config under pytest, ~1 s from a worker thread).
    with _COMPILE_LOCK, ThreadPoolExecutor(max_workers=1) as worker:
        worker.submit(_compile).result()
    log.info("compiled pipeline %s -> %s", cfg.name, output)
    return output


def make_client(
    host: str | None,
    *,
    token: str | None = None,
    namespace: str | None = None,
    sa_token_path: str | None = None,
) -> Any:
    """A `kfp.Client`: token auth, service-account token file, or in-cluster defaults."""
    import kfp

    token = token or os.environ.get("KFP_TOKEN") or None
    kwargs: dict[str, Any] = {"host": host, "existing_token": token}
    if namespace:
        kwargs["namespace"] = namespace
    if sa_token_path:
        from kfp.client import ServiceAccountTokenVolumeCredentials

        kwargs["credentials"] = ServiceAccountTokenVolumeCredentials(path=sa_token_path)
    log.info("connecting to KFP at %s (auth: %s)", host or "in-cluster", _auth_kind(token, sa_token_path))
    return kfp.Client(**kwargs)


def _auth_kind(token: str | None, sa_token_path: str | None) -> str:
    if token:
        return "bearer token"
    if sa_token_path:
        return "service-account token file"
    return "default"


@dataclass(frozen=True)
class PipelinePackage:
    """A compiled pipeline and what a submit would send with it (printed by ``submit --dry-run``)."""

    path: Path
    pipeline: str  # the KFP pipeline it is a version of
    version: str  # `<pipeline>-<digest[:12]>`: equal packages, equal version names
    digest: str  # sha256 of the package file
    parameters: dict[str, Any]  # the run's parameter values: the config's defaults with --param applied

    def describe(self, host: str | None) -> str:
        """Human-readable lines: pipeline, version, parameters and the KFP host."""
        lines = [
            f"pipeline:   {self.pipeline}",
            f"version:    {self.version} (sha256 {self.digest})",
            f"host:       {host or 'in-cluster default'}",
            "parameters:",
        ]
        lines += [f"  {name}: {json.dumps(value)}" for name, value in self.parameters.items()]
        return "\n".join(lines)


def package_pipeline(
    cfg: RunConfig,
    workdir: str | Path,
    *,
    params: dict[str, Any] | None = None,
    pipeline_name: str | None = None,
    build: Build = build_pipeline,
    extra_parameters: Mapping[str, Any] | None = None,
) -> PipelinePackage:
    """Compile `cfg` (with `build`) into `workdir` and name the version it would be uploaded as;
    `extra_parameters`: the defaults of the pipeline's parameters beyond PIPELINE_PARAMETERS."""
    path = compile_pipeline(cfg, Path(workdir) / f"{cfg.name or PIPELINE_NAME}.yaml", build)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    name = pipeline_name or cfg.name or PIPELINE_NAME
    parameters = {**pipeline_parameter_defaults(cfg), **(extra_parameters or {}), **(params or {})}
    return PipelinePackage(path, name, f"{name}-{digest[:12]}", digest, parameters)


def check_config(cfg: RunConfig, *, cluster: bool) -> list[str]:
    """Problems that would stop `cfg` from being compiled or run on a cluster, found offline.

    It compiles the pipeline (in a temporary directory) and, where the config uses a `cluster` section,
    checks both image references whether or not a step of this config runs in them (compiling checks only
    the ones in use). The contract with the cluster's objects (manifests/) is checked by tests/infra.
    """
    problems: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="otdistill-") as tmp:
            package_pipeline(cfg, tmp)
    except Exception as exc:  # whatever kfp or a component refuses is a problem to list, not a crash
        problems.append(f"compile: {type(exc).__name__}: {exc}")
    if cluster:
        for field_name in ("image", "gpu_image"):
            try:
                images.check_reference(getattr(cfg.cluster, field_name), f"cluster.{field_name}")
            except images.ImageReferenceError as exc:
                message = str(exc)
                if not any(message in p for p in problems):
                    problems.append(message)
    return problems


def _equals(key: str, value: str) -> str:
    """A KFP API filter (filter.proto) for `key == value`; EQUALS is operation 1."""
    return json.dumps({"predicates": [{"operation": 1, "key": key, "stringValue": value}]})


def upload_version(client: Any, pkg: PipelinePackage, namespace: str | None = None) -> tuple[str, str]:
    """(pipeline id, version id) of `pkg` on the server: the pipeline is created on first use (its first
    version is this package), a version of the same name (same content) is re-used, else uploaded."""
    description = f"otdistill pipeline, package sha256 {pkg.digest}"
    pipeline_id = client.get_pipeline_id(pkg.pipeline)
    if pipeline_id is None:
        created = client.upload_pipeline(
            str(pkg.path), pipeline_name=pkg.pipeline, description=description, namespace=namespace
        )
        pipeline_id = str(created.pipeline_id)
        # KFP creates the pipeline with one version, holding the uploaded package
        first = client.list_pipeline_versions(pipeline_id, page_size=1).pipeline_versions or []
        if not first:
            raise RuntimeError(f"KFP created pipeline {pkg.pipeline} ({pipeline_id}) without a version")
        version_id = str(first[0].pipeline_version_id)
        log.info("created pipeline %s (%s), version %s", pkg.pipeline, pipeline_id, version_id)
        return pipeline_id, version_id
    same = client.list_pipeline_versions(
        pipeline_id, page_size=1, filter=_equals("display_name", pkg.version)
    ).pipeline_versions
    if same:
        log.info("pipeline %s already has version %s", pkg.pipeline, pkg.version)
        return str(pipeline_id), str(same[0].pipeline_version_id)
    version = client.upload_pipeline_version(
        str(pkg.path), pkg.version, pipeline_id=pipeline_id, description=description
    )
    log.info("uploaded version %s of pipeline %s", pkg.version, pkg.pipeline)
    return str(pipeline_id), str(version.pipeline_version_id)


def submit(
    client: Any,
    cfg: RunConfig,
    *,
    experiment: str = "otdistill",
    run_name: str | None = None,
    params: dict[str, Any] | None = None,
    namespace: str | None = None,
    service_account: str | None = None,
    pipeline_name: str | None = None,
    build: Build = build_pipeline,
) -> str:
    """Upload `cfg`'s compiled pipeline (`build`: the main DAG or a sweep's) as a version and start one
    run of it; returns the KFP run id.

    Caching is the compiled per-task setting (`steps.enable_caching`): kfp applies a run-time caching
    override only to packages, not to runs of a stored version.
    """
    experiment_id = _experiment_id(client, experiment, namespace)
    with tempfile.TemporaryDirectory(prefix="otdistill-") as tmp:
        pkg = package_pipeline(cfg, tmp, pipeline_name=pipeline_name, build=build)
        pipeline_id, version_id = upload_version(client, pkg, namespace)
    result = client.run_pipeline(
        experiment_id=experiment_id,
        job_name=run_name or cfg.name,
        params=dict(params or {}),
        pipeline_id=pipeline_id,
        version_id=version_id,
        service_account=service_account,
    )
    run_id = str(result.run_id)
    log.info("submitted run %s of %s", run_id, pkg.version)
    return run_id


def run_url(host: str | None, run_id: str) -> str:
    """The run's page in the KFP UI, as kfp.Client links it: under `host`, or /pipeline in the cluster."""
    if not host:
        return f"/pipeline/#/runs/details/{run_id}"
    prefix = host.rstrip("/") if host.startswith(("http://", "https://")) else "http://" + host.rstrip("/")
    return f"{prefix}/#/runs/details/{run_id}"


def wait_for_run(client: Any, run_id: str, timeout_s: float, poll_s: float = 5.0) -> str:
    """Block until the run reaches a final state (or `timeout_s` passed: TimeoutError); returns that state.

    Polls `get_run` itself rather than `kfp.Client.wait_for_run_completion`: kfp 2.17's loop does not count
    CANCELED as final, so waiting on a cancelled run would spin until the timeout.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        state = str(client.get_run(run_id).state or "UNKNOWN").upper()
        if state in FINAL_STATES:
            return state
        if time.monotonic() >= deadline:
            raise TimeoutError(f"run {run_id} still {state} after {timeout_s:g} s")
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


def _experiment_id(client: Any, name: str, namespace: str | None = None) -> str:
    try:
        exp = client.get_experiment(experiment_name=name, namespace=namespace)
    except Exception:  # the KFP client raises a bare ValueError / ApiException when it does not exist
        exp = client.create_experiment(name=name, namespace=namespace)
    return str(exp.experiment_id)


def create_schedule(
    client: Any,
    cfg: RunConfig,
    *,
    cron: str,
    name: str | None = None,
    experiment: str = "otdistill",
    params: dict[str, Any] | None = None,
    max_concurrency: int = 1,
    service_account: str | None = None,
    namespace: str | None = None,
    pipeline_name: str | None = None,
) -> str:
    """Upload `cfg`'s compiled pipeline as a version and create a recurring run of it on KFP's 6-field
    `cron`; returns its id. Caching is the compiled setting, as for `submit`."""
    validate_cron(cron)
    if max_concurrency < 1:
        raise ConfigError(f"max_concurrency must be >= 1, got {max_concurrency}")
    experiment_id = _experiment_id(client, experiment, namespace)
    with tempfile.TemporaryDirectory(prefix="otdistill-") as tmp:
        pkg = package_pipeline(cfg, tmp, pipeline_name=pipeline_name)
        pipeline_id, version_id = upload_version(client, pkg, namespace)
    job = client.create_recurring_run(
        experiment_id=experiment_id,
        job_name=name or cfg.name,
        cron_expression=cron,
        max_concurrency=max_concurrency,
        no_catchup=True,
        params=dict(params or {}),
        pipeline_id=pipeline_id,
        version_id=version_id,
        service_account=service_account,
    )
    rid = str(job.recurring_run_id)
    log.info("created recurring run %s (%s) of %s", rid, cron, pkg.version)
    return rid


def list_schedules(
    client: Any, *, experiment: str | None = None, namespace: str | None = None
) -> list[dict[str, str]]:
    """All recurring runs (every page), optionally of one experiment: id, name, status, cron."""
    experiment_id = _experiment_id(client, experiment, namespace) if experiment else None
    rows: list[dict[str, str]] = []
    token = ""
    while True:
        resp = client.list_recurring_runs(
            page_token=token, page_size=100, experiment_id=experiment_id, namespace=namespace
        )
        for job in resp.recurring_runs or []:
            trigger = getattr(job, "trigger", None)
            cron_schedule = getattr(trigger, "cron_schedule", None) if trigger else None
            rows.append(
                {
                    "id": str(job.recurring_run_id),
                    "name": str(job.display_name),
                    "status": str(job.status),
                    "cron": str(getattr(cron_schedule, "cron", "") or ""),
                }
            )
        token = resp.next_page_token or ""
        if not token:
            return rows


def pause_schedule(client: Any, recurring_run_id: str) -> None:
    client.disable_recurring_run(recurring_run_id)


def resume_schedule(client: Any, recurring_run_id: str) -> None:
    client.enable_recurring_run(recurring_run_id)


def delete_schedule(client: Any, recurring_run_id: str) -> None:
    client.delete_recurring_run(recurring_run_id)
