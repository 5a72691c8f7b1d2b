"""Compile the pipeline and talk to a Kubeflow Pipelines API server: runs and recurring runs (schedules).

Authentication is whatever `kfp.Client` supports: a bearer token (`--token` / env KFP_TOKEN), a projected
service-account token file, or nothing inside the cluster (the client then uses the pod's service account).
The token is passed to the client only; it is never logged or printed.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from kfp import compiler

from otdistill.config import ConfigError, RunConfig
from otdistill.pipelines.otdistill_pipeline import build_pipeline

log = logging.getLogger("otdistill.submit")

# KFP recurring runs take a 6-field cron: second minute hour day-of-month month day-of-week.
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,\-?LW#]+$")


def validate_cron(cron: str) -> str:
    """Reject what KFP would reject later: it needs exactly 6 fields (seconds first)."""
    fields = cron.split()
    if len(fields) != 6 or not all(_CRON_FIELD.match(f) for f in fields):
        hint = f' (did you mean "0 {cron}"?)' if len(fields) == 5 else ""
        raise ConfigError(
            f'cron {cron!r} is not a 6-field KFP cron "second minute hour day month weekday"{hint}'
        )
    return cron


def compile_pipeline(cfg: RunConfig, output: str | Path) -> Path:
    """Write the KFP pipeline YAML for `cfg` (cluster settings applied) to `output`."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(cfg), package_path=str(output))
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


def _compiled(cfg: RunConfig, workdir: str) -> str:
    return str(compile_pipeline(cfg, Path(workdir) / f"{cfg.name}.yaml"))


def submit(
    client: Any,
    cfg: RunConfig,
    *,
    experiment: str = "otdistill",
    run_name: str | None = None,
    params: dict[str, Any] | None = None,
    namespace: str | None = None,
    service_account: str | None = None,
) -> str:
    """Compile `cfg` and start one run; returns the KFP run id."""
    with tempfile.TemporaryDirectory(prefix="otdistill-") as tmp:
        result = client.create_run_from_pipeline_package(
            _compiled(cfg, tmp),
            arguments=dict(params or {}),
            run_name=run_name or cfg.name,
            experiment_name=experiment,
            namespace=namespace,
            enable_caching=cfg.steps.enable_caching,
            service_account=service_account,
        )
    run_id = str(result.run_id)
    log.info("submitted run %s", run_id)
    return run_id


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
) -> str:
    """Create a recurring run of `cfg` on KFP's 6-field `cron`; returns its id."""
    validate_cron(cron)
    if max_concurrency < 1:
        raise ConfigError(f"max_concurrency must be >= 1, got {max_concurrency}")
    experiment_id = _experiment_id(client, experiment, namespace)
    with tempfile.TemporaryDirectory(prefix="otdistill-") as tmp:
        job = client.create_recurring_run(
            experiment_id=experiment_id,
            job_name=name or cfg.name,
            cron_expression=cron,
            max_concurrency=max_concurrency,
            no_catchup=True,
            params=dict(params or {}),
            pipeline_package_path=_compiled(cfg, tmp),
            enable_caching=cfg.steps.enable_caching,
            service_account=service_account,
        )
    rid = str(job.recurring_run_id)
    log.info("created recurring run %s (%s)", rid, cron)
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
