"""The MLflow Deployment's pod as an overlay renders it, run on this machine against the test servers.

The kubelet's part is redone here: the environment (ConfigMap, Secrets, `$(VAR)` expansion, in order),
`command` / `args` with the same expansion, init containers to completion before the server. Each container
runs either from this venv (`servers` tests) or in the image the manifest names, with `docker run` on the
host network and the container's securityContext and emptyDir mounts (`containers` tests).

Only cluster networking is replaced: the database and S3 hosts in the ConfigMap point at 127.0.0.1, and
the server binds 127.0.0.1 on a free port instead of 0.0.0.0:5000.
"""

from __future__ import annotations

import re
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from otdistill.tracking.access import Account
from tests.infra.manifest_tools import MANIFESTS, REPO, by_kind, documents, kustomize_build
from tests.servers.processes import ADMIN_USERNAME, AUTH_CONFIG, LOCALHOST, VENV_BIN, PostgresServer, S3Server

VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
# Commands the MLflow image installs besides the venv's (docker/Dockerfile.mlflow COPY), as their sources
# here. tests/containers/test_db_migrations.py checks that the image holds these very files.
IMAGE_SCRIPTS = {"mlflow-db-upgrade": REPO / "docker" / "mlflow_db_upgrade.py"}
# The image's own environment (Dockerfile.mlflow ENV) that a container run from this venv needs: the
# basic-auth config file, as its source here.
IMAGE_ENV = {"MLFLOW_AUTH_CONFIG_PATH": str(AUTH_CONFIG)}
# Password per (PostgreSQL port, role): a role is created once per test cluster and keeps its password.
_ROLES: dict[tuple[int, str], str] = {}


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


def mlflow_role(postgres: PostgresServer, user: str) -> str:
    """The password of login role `user` on this cluster, created on first use (URL-safe, as
    manifests/secrets/README.md asks)."""
    key = (postgres.port, user)
    if key not in _ROLES:
        password = secrets.token_hex(12)
        postgres.sql(f"CREATE ROLE {user} LOGIN PASSWORD '{password}'")
        _ROLES[key] = password
    return _ROLES[key]


@dataclass(frozen=True)
class MlflowPod:
    """The pod template of Deployment `mlflow` with its ConfigMap localised and its Secrets' values."""

    spec: dict[str, Any]
    configmaps: dict[str, dict[str, str]]
    secret_values: dict[str, dict[str, str]]
    database: str

    @property
    def init_containers(self) -> list[dict[str, Any]]:
        return list(self.spec.get("initContainers", []))

    @property
    def server(self) -> dict[str, Any]:
        (container,) = self.spec["containers"]
        return dict(container)

    def env(self, container: dict[str, Any]) -> dict[str, str]:
        return container_env(container, self.configmaps, self.secret_values)

    def local_env(self, container: dict[str, Any]) -> dict[str, str]:
        """The environment of the container run from this venv: the image's ENV, then the pod's."""
        return {**IMAGE_ENV, **self.env(container)}

    @property
    def admin(self) -> Account:
        """The basic-auth admin the server creates from Secret mlflow-auth on its first start."""
        return Account(ADMIN_USERNAME, self.secret_values["mlflow-auth"]["admin-password"])

    def argv(self, container: dict[str, Any], env: dict[str, str]) -> list[str]:
        """`command` + `args` after the kubelet's expansion (the image has no ENTRYPOINT)."""
        return [kubelet_expand(a, env) for a in [*container["command"], *container.get("args", [])]]

    def local_argv(self, container: dict[str, Any], env: dict[str, str]) -> list[str]:
        """The argv with its program taken from this venv (or the image script's source here)."""
        program, *rest = self.argv(container, env)
        if program in IMAGE_SCRIPTS:
            return [sys.executable, str(IMAGE_SCRIPTS[program]), *rest]
        return [str(VENV_BIN / program), *rest]

    def docker_argv(
        self, container: dict[str, Any], env: dict[str, str], name: str, argv: list[str] | None = None
    ) -> list[str]:
        """`docker run` of the container as the kubelet would start it, on the host network: its image,
        user, read-only root, dropped capabilities, emptyDir mounts, and env passed by name (the values
        come from the caller's environment, so no credential is on the command line). `argv` replaces
        the expanded command + args (the server's localised bind address)."""
        pod_security = self.spec.get("securityContext", {})
        security = container.get("securityContext", {})
        user = security.get("runAsUser", pod_security["runAsUser"])
        group = security.get("runAsGroup", pod_security["runAsGroup"])
        run = ["docker", "run", "--rm", "--name", name, "--network=host", f"--user={user}:{group}"]
        if security.get("readOnlyRootFilesystem"):
            run.append("--read-only")
        if security.get("allowPrivilegeEscalation") is False:
            run.append("--security-opt=no-new-privileges")
        run += [f"--cap-drop={cap}" for cap in security.get("capabilities", {}).get("drop", [])]
        empty_dirs = {v["name"] for v in self.spec.get("volumes", []) if "emptyDir" in v}
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in empty_dirs, f"{mount['name']}: only emptyDir volumes are mapped"
            run.append(f"--tmpfs={mount['mountPath']}:rw,mode=1777")
        run += [a for variable in env for a in ("-e", variable)]
        program, *rest = argv if argv is not None else self.argv(container, env)
        return [*run, "--entrypoint", program, container["image"], *rest]


def mlflow_pod(
    overlay: str, postgres: PostgresServer, s3: S3Server, artifact_prefix: str = "manifest-artifacts"
) -> MlflowPod:
    """The overlay's MLflow pod on a new, empty database of `postgres` (owned by the ConfigMap's user)."""
    docs = documents(kustomize_build(MANIFESTS / "overlays" / overlay))
    spec = by_kind(docs, "Deployment")["mlflow"]["spec"]["template"]["spec"]
    configmap = dict(by_kind(docs, "ConfigMap")["mlflow-server"]["data"])
    user = configmap["MLFLOW_DB_USER"]
    password = mlflow_role(postgres, user)
    database = f"mlflow_{secrets.token_hex(4)}"
    postgres.sql(f"CREATE DATABASE {database} OWNER {user}")
    # Cluster DNS names -> the local servers; nothing else changes.
    configmap.update(
        MLFLOW_DB_HOST=LOCALHOST,
        MLFLOW_DB_PORT=str(postgres.port),
        MLFLOW_DB_NAME=database,
        MLFLOW_S3_ENDPOINT_URL=s3.endpoint,
        MLFLOW_ARTIFACTS_DESTINATION=f"s3://{s3.bucket}/{artifact_prefix}",
    )
    secret_values = {
        "mlflow-db": {"password": password},
        "mlflow-artifact-store": {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key},
        "mlflow-auth": {"admin-password": secrets.token_hex(16), "secret-key": secrets.token_hex(32)},
    }
    return MlflowPod(spec, {"mlflow-server": configmap}, secret_values, database)


def localise_server_args(argv: list[str], port: int) -> list[str]:
    """The server's argv bound to 127.0.0.1:`port` instead of the pod's 0.0.0.0:5000."""
    assert "--host=0.0.0.0" in argv and "--port=5000" in argv, argv
    return [
        f"--host={LOCALHOST}" if a == "--host=0.0.0.0" else f"--port={port}" if a == "--port=5000" else a
        for a in argv
    ]


def database_uri(postgres: PostgresServer, database: str) -> str:
    """The superuser's URI of another database of the same cluster."""
    return postgres.uri.rsplit("/", 1)[0] + "/" + database


def schema_revision(postgres: PostgresServer, database: str) -> str | None:
    """The database's `alembic_version` (MLflow's schema revision); None when the table does not exist."""
    import psycopg

    with psycopg.connect(database_uri(postgres, database)) as conn:
        if conn.execute("SELECT to_regclass('public.alembic_version')").fetchone() == (None,):
            return None
        rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    return ",".join(str(r[0]) for r in rows)


def head_revision() -> str:
    """The newest schema revision of the installed MLflow (its alembic scripts); the image pins the same
    MLflow version (constraints.txt), which tests/containers/test_images.py checks."""
    import mlflow
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory(str(Path(mlflow.__file__).parent / "store" / "db_migrations"))
    head = scripts.get_current_head()
    assert head, "MLflow's migrations have more than one head"
    return head
