"""The MLflow pod's schema upgrade, in the MLflow image, against the real PostgreSQL.

The init container and the server container run as an overlay renders them (tests/servers/manifest_pod.py:
command, args and env read out of the kustomize build, `docker run` with the pod's user, read-only root and
emptyDir /tmp). One database goes through a pod's life: prod's two replicas start together on the empty
database, their init containers wait for each other's advisory lock and both succeed (unguarded, one of two
concurrent `mlflow db upgrade` runs fails on an empty database: see docker/mlflow_db_upgrade.py); the server
starts on the new schema (the basic-auth app's tables included, created under the same lock) and takes
data; a rolling restart upgrades the existing database again, two at once, and changes nothing: the same
revision, tables and columns, and the data is kept. (The server is started once: on the second start it
would find the very schema and rows it started on the first time.)
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from mlflow.tracking import MlflowClient

from otdistill.tracking.access import as_user
from tests.containers.conftest import docker
from tests.servers.manifest_pod import (
    IMAGE_SCRIPTS,
    MlflowPod,
    database_uri,
    head_revision,
    localise_server_args,
    mlflow_pod,
    schema_revision,
)
from tests.servers.processes import LOCALHOST, ManagedProcess, ServerStack, free_port, http_ok


def _lock_key() -> int:
    """The advisory lock key of the script the init container runs (loaded from its source here)."""
    spec = importlib.util.spec_from_file_location("mlflow_db_upgrade", IMAGE_SCRIPTS["mlflow-db-upgrade"])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return int(module.LOCK_KEY)


def init_container(pod: MlflowPod) -> dict[str, Any]:
    (init,) = pod.init_containers
    return init


def start_init(pod: MlflowPod, tmp_path: Path) -> tuple[subprocess.Popen[str], str, Path]:
    """The init container started in its image: (process, container name, log file)."""
    init = init_container(pod)
    env = pod.env(init)
    name = f"otdistill-test-db-upgrade-{secrets.token_hex(4)}"
    log = tmp_path / f"{name}.log"
    with open(log, "w", encoding="utf-8") as out:
        process = subprocess.Popen(
            pod.docker_argv(init, env, name),
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    return process, name, log


def finish(process: subprocess.Popen[str], name: str, log: Path) -> str:
    """Wait for an init container; its output, after asserting it exited 0."""
    try:
        process.wait(timeout=300)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60, check=False)
    output = log.read_text()
    assert process.returncode == 0, f"init container exited {process.returncode}:\n{output[-3000:]}"
    return output


def run_init(pod: MlflowPod, tmp_path: Path) -> str:
    return finish(*start_init(pod, tmp_path))


@contextlib.contextmanager
def serving(pod: MlflowPod, tmp_path: Path) -> Iterator[str]:
    """The server container in its image on 127.0.0.1:<free port>; its URI while it answers /health."""
    env = pod.env(pod.server)
    port = free_port()
    name = f"otdistill-test-mlflow-pod-{port}"
    argv = localise_server_args(pod.argv(pod.server, env), port)
    uri = f"http://{LOCALHOST}:{port}"
    process = ManagedProcess(
        name="mlflow server (manifest, image)",
        argv=pod.docker_argv(pod.server, env, name, argv),
        log_path=tmp_path / f"{name}.log",
        env=env,
        ready=lambda: http_ok(f"{uri}/health"),
        start_timeout_s=300.0,
    )
    try:
        process.start()
        yield uri
    finally:
        process.stop()
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60, check=False)


def test_the_image_runs_the_upgrade_script_of_this_checkout(built_images: dict[str, str]) -> None:
    """The local (`servers`) runs use the script's source here; the image must hold the same file."""
    image = built_images["mlflow"]
    shipped = docker("run", "--rm", "--entrypoint", "cat", image, "/usr/local/bin/mlflow-db-upgrade").stdout
    source = IMAGE_SCRIPTS["mlflow-db-upgrade"].read_text()
    assert shipped == source, "the MLflow image is older than docker/mlflow_db_upgrade.py: `make images`"


def _waiting_on_the_lock(pg_uri: str, database: str, key: int) -> int:
    """How many sessions wait for the upgrade's advisory lock in `database` (a bigint key is stored as
    classid = high 32 bits, objid = low 32 bits, objsubid = 1)."""
    with psycopg.connect(pg_uri) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
            "WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = %s "
            "AND l.classid::text::bigint = %s AND l.objid::text::bigint = %s AND l.objsubid = 1",
            (database, key >> 32, key & 0xFFFFFFFF),
        ).fetchone()
    assert row is not None
    return int(row[0])


def _schema(uri: str) -> list[tuple[str, str, str, str]]:
    """The database's tables and columns (name, type, nullability), to see that an upgrade changed nothing."""
    with psycopg.connect(uri) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns "
            "WHERE table_schema = 'public' ORDER BY table_name, column_name"
        ).fetchall()
    return [(str(a), str(b), str(c), str(d)) for a, b, c, d in rows]


def _experiment(uri: str, experiment_id: str) -> tuple[str, str] | None:
    """(name, lifecycle stage) of an experiment, read from the database."""
    with psycopg.connect(uri) as conn:
        row = conn.execute(
            "SELECT name, lifecycle_stage FROM experiments WHERE experiment_id = %s", (int(experiment_id),)
        ).fetchone()
    return None if row is None else (str(row[0]), str(row[1]))


def test_the_upgrade_is_the_same_in_dev_and_prod(container_stack: ServerStack) -> None:
    """The lifecycle below runs prod's pod (two replicas); dev's single pod runs the same init container."""
    pg, s3 = container_stack.postgres, container_stack.s3
    dev, prod = (init_container(mlflow_pod(overlay, pg, s3)) for overlay in ("dev", "prod"))
    fields = ("image", "command", "args", "env", "envFrom", "securityContext", "volumeMounts")
    assert {k: dev.get(k) for k in fields} == {k: prod.get(k) for k in fields}


def test_replicas_start_on_an_empty_database_then_restart_on_the_existing_one(
    container_stack: ServerStack, built_images: dict[str, str], tmp_path: Path
) -> None:
    """Prod's two replicas: both init containers start while the lock is held (by the test, standing in
    for a pod that is upgrading), both queue on it, neither touches the schema; released, both succeed and
    the server starts. A rolling restart then upgrades the existing database, two at once, unguarded."""
    pg = container_stack.postgres
    pod = mlflow_pod("prod", pg, container_stack.s3)
    assert init_container(pod)["image"] == pod.server["image"] == built_images["mlflow"]
    uri = database_uri(pg, pod.database)
    assert schema_revision(pg, pod.database) is None
    key = _lock_key()
    with psycopg.connect(uri, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (key,))
        started = [start_init(pod, tmp_path) for _ in range(2)]
        deadline = time.monotonic() + 240
        while _waiting_on_the_lock(uri, pod.database, key) < 2:
            exited = [log.read_text()[-2000:] for process, _, log in started if process.poll() is not None]
            assert not exited, f"an init container ended while the lock was held:\n{exited}"
            assert time.monotonic() < deadline, "the init containers never queued on the advisory lock"
            time.sleep(0.5)
        assert schema_revision(pg, pod.database) is None, "an upgrade ran without the lock"
    # The holder's session is closed: the lock is free.
    outputs = [finish(*one) for one in started]
    assert all("waiting for its lock" in out for out in outputs), outputs
    assert schema_revision(pg, pod.database) == head_revision()
    # ...and the basic-auth app's tables, under the same lock, before any server starts.
    assert {"users", "alembic_version_auth"} <= {table for table, *_ in _schema(uri)}

    with serving(pod, tmp_path) as server, as_user(pod.admin):
        client = MlflowClient(server)
        assert client.search_experiments(max_results=1)
        experiment = client.create_experiment("survives-the-second-upgrade")
    schema = _schema(uri)
    assert ("experiments", "name", "character varying", "NO") in schema

    # Rolling restart on the existing database: two at once again, unguarded by the test.
    again = [start_init(pod, tmp_path) for _ in range(2)]
    for one in again:
        finish(*one)
    assert schema_revision(pg, pod.database) == head_revision()
    assert _schema(uri) == schema, "upgrading a current schema changed it"
    assert _experiment(uri, experiment) == ("survives-the-second-upgrade", "active")
