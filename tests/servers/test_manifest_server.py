"""The tracking server exactly as the dev overlay's Deployment runs it: its init container's schema upgrade,
then its command, args and env (ConfigMap, Secrets, kubelet `$(VAR)` expansion), started locally against
the test PostgreSQL (password auth) and S3 (tests/servers/manifest_pod.py).

Only what is cluster networking is replaced: the database and S3 hosts point at 127.0.0.1, and the server
binds 127.0.0.1 on a free port instead of 0.0.0.0:5000. Everything else (the backend-store URI template,
the artifact proxy, the allowed Host headers, the uvicorn options) is the manifest's.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import requests
from mlflow.tracking import MlflowClient

from otdistill.tracking import TrackingConfig, start_pipeline_run, step_run
from otdistill.tracking.access import as_user
from tests.servers.manifest_pod import (
    head_revision,
    kubelet_expand,
    localise_server_args,
    mlflow_pod,
    schema_revision,
)
from tests.servers.processes import LOCALHOST, ManagedProcess, ServerStack, free_port, http_ok


def test_kubelet_expansion_semantics() -> None:
    env = {"A": "1", "B": "two"}
    assert kubelet_expand("x$(A)-$(B)-$(C)-$$(A)", env) == "x1-two-$(C)-$(A)"


@pytest.fixture()
def manifest_server(server_stack: ServerStack, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(server URI, artifact prefix) of the manifest-defined server, stopped after the test."""
    pg = server_stack.postgres
    prefix = "manifest-artifacts"
    pod = mlflow_pod("dev", pg, server_stack.s3, prefix)
    # The init containers run to completion first, as the kubelet runs them (the schema upgrade).
    for init in pod.init_containers:
        env = {**pod.local_env(init), "HOME": str(tmp_path)}
        done = subprocess.run(pod.local_argv(init, env), env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"init container {init['name']} failed:\n{done.stderr[-3000:]}"
    assert schema_revision(pg, pod.database) == head_revision()

    port = free_port()
    env = pod.local_env(pod.server)
    assert env["MLFLOW_BACKEND_STORE_URI"] == (
        f"postgresql://mlflow:{pod.secret_values['mlflow-db']['password']}@{LOCALHOST}:{pg.port}/{pod.database}"
    ), "the URI template did not expand"
    program, *args = pod.local_argv(pod.server, env)
    uri = f"http://{LOCALHOST}:{port}"
    env["HOME"] = str(tmp_path)  # the pod mounts an emptyDir at /tmp for HOME; here a temp dir
    process = ManagedProcess(
        name="mlflow server (dev manifest)",
        argv=[program, *localise_server_args(args, port)],
        log_path=tmp_path / "manifest-mlflow.log",
        env=env,
        ready=lambda: http_ok(f"{uri}/health"),
        start_timeout_s=180.0,
    )
    process.start()
    try:
        with as_user(pod.admin):
            yield uri, prefix
    finally:
        process.stop()


def test_manifest_server_serves_tracking_and_proxies_artifacts_to_s3(
    manifest_server: tuple[str, str], server_stack: ServerStack
) -> None:
    uri, prefix = manifest_server
    search = "/api/2.0/mlflow/experiments/search?max_results=1"
    # The Service DNS names and pod IPs are accepted Host headers; anything else is refused.
    login = (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"])
    for host in ("mlflow.otdistill-mlflow.svc.cluster.local:5000", "mlflow:5000", "10.12.0.7:5000"):
        got = requests.get(uri + search, headers={"Host": host}, auth=login, timeout=10)
        assert got.status_code == 200, host
        # The Deployment's basic-auth app: no login, no answer.
        assert requests.get(uri + search, headers={"Host": host}, timeout=10).status_code == 401, host
    assert requests.get(uri + search, headers={"Host": "attacker.example.com"}, timeout=10).status_code == 403

    config = TrackingConfig(tracking_uri=uri, experiment="manifest", preflight_timeout_s=5)
    with start_pipeline_run(config, "manifest") as parent, step_run(parent, "evaluate") as step:
        step.log_metrics({"rougeLsum": 0.3}, step=1)
        step.log_dict({"rougeLsum": 0.3}, "eval_report.json")
    assert MlflowClient(uri).get_run(step.run_id).data.metrics == {"rougeLsum": 0.3}

    s3 = boto3.client(
        "s3",
        endpoint_url=server_stack.s3.endpoint,
        aws_access_key_id=server_stack.s3.access_key,
        aws_secret_access_key=server_stack.s3.secret_key,
        region_name="us-east-1",
    )
    listing = s3.list_objects_v2(Bucket=server_stack.s3.bucket, Prefix=f"{prefix}/")
    keys = [o["Key"] for o in listing.get("Contents", [])]
    assert any(k.endswith(f"{step.run_id}/artifacts/eval_report.json") for k in keys), keys
