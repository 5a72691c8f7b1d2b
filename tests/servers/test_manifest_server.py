"""The tracking server exactly as the dev overlay's Deployment runs it: its command, args and env (ConfigMap,
Secrets, kubelet `$(VAR)` expansion), started locally against the test PostgreSQL (password auth) and S3.

Only what is cluster networking is replaced: the database and S3 hosts point at 127.0.0.1, and the server
binds 127.0.0.1 on a free port instead of 0.0.0.0:5000. Everything else (the backend-store URI template,
the artifact proxy, the allowed Host headers, the uvicorn options) is the manifest's.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from mlflow.tracking import MlflowClient

from otdistill.tracking import TrackingConfig, start_pipeline_run, step_run
from tests.infra.manifest_tools import MANIFESTS, by_kind, documents, kustomize_build
from tests.servers.processes import LOCALHOST, VENV_BIN, ManagedProcess, ServerStack, free_port, http_ok

VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def kubelet_expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: defined names are replaced, `$$` escapes, unknown refs stay as-is."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return VAR_REF.sub(one, value)


def container_env(
    container: dict[str, Any], configmaps: dict[str, dict[str, str]], secret_values: dict[str, dict[str, str]]
) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom first, then `env` in order."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = kubelet_expand(item["value"], env)
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secret_values[ref["name"]][ref["key"]]
    return env


def test_kubelet_expansion_semantics() -> None:
    env = {"A": "1", "B": "two"}
    assert kubelet_expand("x$(A)-$(B)-$(C)-$$(A)", env) == "x1-two-$(C)-$(A)"


@pytest.fixture()
def manifest_server(server_stack: ServerStack, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(server URI, artifact prefix) of the manifest-defined server, stopped after the test."""
    docs = documents(kustomize_build(MANIFESTS / "overlays" / "dev"))
    deployment = by_kind(docs, "Deployment")["mlflow"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    configmap = dict(by_kind(docs, "ConfigMap")["mlflow-server"]["data"])

    pg, s3 = server_stack.postgres, server_stack.s3
    password = secrets.token_hex(12)  # URL-safe, as manifests/secrets/README.md asks
    database = f"mlflow_{secrets.token_hex(4)}"
    pg.sql(f"CREATE ROLE {configmap['MLFLOW_DB_USER']} LOGIN PASSWORD '{password}'")
    pg.sql(f"CREATE DATABASE {database} OWNER {configmap['MLFLOW_DB_USER']}")
    prefix = "manifest-artifacts"
    port = free_port()
    # Cluster DNS names -> the local servers; nothing else changes.
    configmap.update(
        MLFLOW_DB_HOST=LOCALHOST,
        MLFLOW_DB_PORT=str(pg.port),
        MLFLOW_DB_NAME=database,
        MLFLOW_S3_ENDPOINT_URL=s3.endpoint,
        MLFLOW_ARTIFACTS_DESTINATION=f"s3://{s3.bucket}/{prefix}",
    )
    env = container_env(
        container,
        {"mlflow-server": configmap},
        {
            "mlflow-db": {"password": password},
            "mlflow-artifact-store": {
                "AWS_ACCESS_KEY_ID": s3.access_key,
                "AWS_SECRET_ACCESS_KEY": s3.secret_key,
            },
        },
    )
    args = [kubelet_expand(a, env) for a in container["args"]]
    assert "--host=0.0.0.0" in args and "--port=5000" in args
    args = [
        "--host=127.0.0.1" if a == "--host=0.0.0.0" else f"--port={port}" if a == "--port=5000" else a
        for a in args
    ]
    command = [str(VENV_BIN / container["command"][0]), *container["command"][1:]]
    uri = f"http://{LOCALHOST}:{port}"
    env["HOME"] = str(tmp_path)  # the pod mounts an emptyDir at /tmp for HOME; here a temp dir
    process = ManagedProcess(
        name="mlflow server (dev manifest)",
        argv=[*command, *args],
        log_path=tmp_path / "manifest-mlflow.log",
        env=env,
        ready=lambda: http_ok(f"{uri}/health"),
        start_timeout_s=180.0,
    )
    assert env["MLFLOW_BACKEND_STORE_URI"] == (
        f"postgresql://mlflow:{password}@{LOCALHOST}:{pg.port}/{database}"
    ), "the URI template did not expand"
    process.start()
    try:
        yield uri, prefix
    finally:
        process.stop()


def test_manifest_server_serves_tracking_and_proxies_artifacts_to_s3(
    manifest_server: tuple[str, str], server_stack: ServerStack
) -> None:
    uri, prefix = manifest_server
    search = "/api/2.0/mlflow/experiments/search?max_results=1"
    # The Service DNS names and pod IPs are accepted Host headers; anything else is refused.
    for host in ("mlflow.otdistill-mlflow.svc.cluster.local:5000", "mlflow:5000", "10.12.0.7:5000"):
        assert requests.get(uri + search, headers={"Host": host}, timeout=10).status_code == 200, host
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
