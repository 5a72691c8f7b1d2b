"""Every overlay builds with kustomize and validates strictly against Kubernetes; policies say what we mean.

No cluster runs here: validation is offline, against the JSON schemas kubernetes-validate ships. A fixture
breaks a copy of the manifests on purpose to prove the check fails on a typo.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from otdistill import images
from tests.infra import netpol
from tests.infra.manifest_tools import (
    KUBERNETES_VERSION,
    MANIFESTS,
    OVERLAYS,
    REPO,
    by_kind,
    check_manifests,
    documents,
    kubernetes_validate,
    kustomize_build,
    pod_specs,
)
from tests.infra.test_docker import instructions
from tests.servers.processes import free_port

PIPELINE_NS = "otdistill-pipelines"


@pytest.fixture(scope="module", params=OVERLAYS)
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """(overlay name, path of its `kustomize build` output)."""
    overlay = str(request.param)
    out = tmp_path_factory.mktemp(overlay) / "built.yaml"
    out.write_text(kustomize_build(MANIFESTS / "overlays" / overlay))
    return overlay, out


def test_schema_version_is_shipped_and_current() -> None:
    from kubernetes_validate.utils import all_versions, latest_version

    assert KUBERNETES_VERSION in all_versions()
    assert latest_version() == KUBERNETES_VERSION


def test_overlay_validates_strictly(built: tuple[str, Path]) -> None:
    overlay, path = built
    result = kubernetes_validate(path)
    assert result.returncode == 0, f"{overlay}:\n{result.stdout}\n{result.stderr}"
    kinds = {d["kind"] for d in documents(path.read_text())}
    assert {"Deployment", "StatefulSet", "Service", "NetworkPolicy", "Role", "RoleBinding"} <= kinds
    assert {"ServiceAccount", "PersistentVolumeClaim", "ConfigMap", "ResourceQuota", "Namespace"} <= kinds


def test_secret_templates_validate_and_hold_only_placeholders() -> None:
    templates = sorted((MANIFESTS / "secrets").glob("*.example.yaml"))
    assert {p.name for p in templates} == {
        "mlflow-db.example.yaml",
        "mlflow-artifact-store.example.yaml",
        "minio-root.example.yaml",
        "mlflow-auth.example.yaml",
    }
    for path in templates:
        result = kubernetes_validate(path)
        assert result.returncode == 0, result.stdout
        (secret,) = documents(path.read_text())
        assert "data" not in secret, f"{path.name}: use stringData placeholders, not encoded values"
        for key, value in secret["stringData"].items():
            assert value.startswith("<REPLACE"), f"{path.name}:{key} holds something other than a placeholder"


def test_no_secret_values_in_the_build(built: tuple[str, Path]) -> None:
    docs = documents(built[1].read_text())
    assert by_kind(docs, "Secret") == {}
    referenced = {
        ref["secretKeyRef"]["name"]
        for spec in pod_specs(docs).values()
        for container in [*spec.get("initContainers", []), *spec["containers"]]
        for ref in (e.get("valueFrom", {}) for e in container.get("env", []))
        if "secretKeyRef" in ref
    }
    template_files = (MANIFESTS / "secrets").glob("*.example.yaml")
    templates = {documents(p.read_text())[0]["metadata"]["name"] for p in template_files}
    assert referenced <= templates, f"Secrets referenced without a template: {referenced - templates}"


def test_workloads_are_pinned_non_root_probed_and_bounded(built: tuple[str, Path]) -> None:
    for name, spec in pod_specs(documents(built[1].read_text())).items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec.get("automountServiceAccountToken") is False, name
        for container in spec["containers"]:
            images.check_reference(container["image"], name)  # a tag (not latest) or a sha256 digest
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), name
            assert "readinessProbe" in container and "livenessProbe" in container, name
        # Init containers run to completion (no probes), but are pinned and bounded like the rest.
        for container in spec.get("initContainers", []):
            images.check_reference(container["image"], name)
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), name


def test_mlflow_server_deployment(built: tuple[str, Path]) -> None:
    docs = documents(built[1].read_text())
    deployment = by_kind(docs, "Deployment")["mlflow"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == images.MLFLOW
    assert container["command"] == ["mlflow", "server"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    env = {e["name"]: e for e in container["env"]}
    assert "$(MLFLOW_DB_PASSWORD)" in env["MLFLOW_BACKEND_STORE_URI"]["value"]
    assert env["MLFLOW_DB_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-db", "key": "password"}
    # MLflow's basic-auth app: the admin password and CSRF key from Secret mlflow-auth; its users and
    # grants in the server's own database (libpq's variables, from the same ConfigMap keys and Secret).
    assert "--app-name=basic-auth" in container["args"]
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-auth"
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-auth"
    assert {k: env[k]["value"] for k in ("PGHOST", "PGDATABASE", "PGUSER", "PGPASSWORD")} == {
        "PGHOST": "$(MLFLOW_DB_HOST)",
        "PGDATABASE": "$(MLFLOW_DB_NAME)",
        "PGUSER": "$(MLFLOW_DB_USER)",
        "PGPASSWORD": "$(MLFLOW_DB_PASSWORD)",
    }
    config = by_kind(docs, "ConfigMap")["mlflow-server"]["data"]
    assert config["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert config["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    service = by_kind(docs, "Service")["mlflow"]
    assert service["metadata"]["namespace"] == "otdistill-mlflow"
    tracking = by_kind(docs, "ConfigMap")["otdistill-tracking"]["data"]
    assert tracking["MLFLOW_TRACKING_URI"] == "http://mlflow.otdistill-mlflow.svc.cluster.local:5000"


# The init container of Deployment mlflow that brings the schema to the server's MLflow version
# (docker/mlflow_db_upgrade.py, installed in the MLflow image under this name).
UPGRADE_COMMAND = ["mlflow-db-upgrade"]
UPGRADE_SCRIPT = REPO / "docker" / "mlflow_db_upgrade.py"


def schema_upgrade_problems(deployment: dict[str, Any]) -> list[str]:
    """Why pods of the MLflow Deployment could start the server before the schema upgrade, or upgrade
    another database than the server's (empty: they cannot)."""
    spec = deployment["spec"]["template"]["spec"]
    (server,) = spec["containers"]
    upgrades = [c for c in spec.get("initContainers", []) if c.get("command") == UPGRADE_COMMAND]
    if not upgrades:
        return [
            f"Deployment mlflow has no init container running {UPGRADE_COMMAND}: the server would start on "
            "an empty database (replicas racing to create the tables) or refuse an out-of-date schema"
        ]
    problems = []
    for init in upgrades:
        name = init["name"]
        if init.get("restartPolicy") == "Always":
            problems.append(
                f"init container {name} is a sidecar (restartPolicy: Always): the server does not wait"
            )
        if init["image"] != server["image"]:
            problems.append(
                f"init container {name} runs {init['image']}, the server {server['image']}: the schema "
                "must be the server's MLflow version"
            )
        for field in ("envFrom", "env"):
            if init.get(field) != server.get(field):
                problems.append(
                    f"init container {name}: {field} differs from the server's, so it may upgrade another "
                    "database than the one the server uses (MLFLOW_BACKEND_STORE_URI)"
                )
    return problems


def test_the_server_starts_only_after_the_schema_upgrade(built: tuple[str, Path]) -> None:
    deployment = by_kind(documents(built[1].read_text()), "Deployment")["mlflow"]
    assert schema_upgrade_problems(deployment) == []
    # The command is what the MLflow image installs, from the script that is tested.
    copies = [c.split() for c in instructions(REPO / "docker" / "Dockerfile.mlflow", "COPY")]
    assert ["--chmod=0755", "docker/mlflow_db_upgrade.py", "/usr/local/bin/mlflow-db-upgrade"] in copies


def _drop_init(spec: dict[str, Any]) -> None:
    del spec["initContainers"]


def _sidecar(spec: dict[str, Any]) -> None:
    spec["initContainers"][0]["restartPolicy"] = "Always"


def _other_database(spec: dict[str, Any]) -> None:
    env = spec["initContainers"][0]["env"]
    uri = next(e for e in env if e["name"] == "MLFLOW_BACKEND_STORE_URI")
    uri["value"] = uri["value"].replace("$(MLFLOW_DB_NAME)", "mlflow_staging")


def _other_image(spec: dict[str, Any]) -> None:
    spec["initContainers"][0]["image"] = "ghcr.io/otdistill/otdistill-mlflow:0.0.9"


SCHEMA_MUTATIONS: dict[str, Callable[[dict[str, Any]], None]] = {
    "no init container": _drop_init,
    "sidecar": _sidecar,
    "another database": _other_database,
    "another image": _other_image,
}


@pytest.mark.parametrize("mutation", sorted(SCHEMA_MUTATIONS))
def test_a_pod_that_could_serve_before_the_upgrade_fails_the_check(mutation: str) -> None:
    docs = documents(kustomize_build(MANIFESTS / "overlays" / "prod"))
    deployment = copy.deepcopy(by_kind(docs, "Deployment")["mlflow"])
    SCHEMA_MUTATIONS[mutation](deployment["spec"]["template"]["spec"])
    assert schema_upgrade_problems(deployment), f"{mutation} went unnoticed"


def _upgrade(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The init container's script, run from its source with this venv's Python (no database needed)."""
    return subprocess.run(
        [sys.executable, str(UPGRADE_SCRIPT), *args],
        env={k: v for k, v in {**os.environ, **env}.items() if v},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_upgrade_script_names_a_bad_database_uri() -> None:
    missing = _upgrade({"MLFLOW_BACKEND_STORE_URI": ""})
    assert missing.returncode == 2 and "MLFLOW_BACKEND_STORE_URI is not set" in missing.stderr
    sqlite = _upgrade({"MLFLOW_BACKEND_STORE_URI": "sqlite:///mlflow.db"})
    assert sqlite.returncode == 2 and "'sqlite' URI; the advisory lock needs PostgreSQL" in sqlite.stderr
    closed = f"postgresql://mlflow:s3cr3t-pw@127.0.0.1:{free_port()}/mlflow"
    down = _upgrade({"MLFLOW_BACKEND_STORE_URI": closed}, "--connect-timeout-s", "0")
    assert down.returncode == 1 and "unreachable" in down.stderr, down.stderr
    assert "s3cr3t-pw" not in down.stderr + down.stdout, "the password was logged"


def _ingress_sources(policy: dict[str, Any]) -> list[dict[str, Any]]:
    return [src for rule in policy["spec"].get("ingress", []) for src in rule.get("from", [])]


MLFLOW_NS = "otdistill-mlflow"


def test_network_policies_deny_by_default_and_admit_only_what_is_named(built: tuple[str, Path]) -> None:
    overlay, path = built
    docs = documents(path.read_text())
    policies = {
        (d["metadata"]["namespace"], d["metadata"]["name"]): d for d in docs if d["kind"] == "NetworkPolicy"
    }
    for namespace in (MLFLOW_NS, PIPELINE_NS):
        deny = policies[(namespace, "default-deny")]["spec"]
        assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}, namespace
    assert _ingress_sources(policies[(MLFLOW_NS, "mlflow-from-pipelines")]) == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": PIPELINE_NS}}}
    ]
    assert _ingress_sources(policies[(MLFLOW_NS, "postgres-from-mlflow")]) == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "mlflow"}}}
    ]
    for (namespace, name), policy in policies.items():
        for src in _ingress_sources(policy):
            assert src.get("namespaceSelector") != {}, "an empty namespaceSelector admits every namespace"
            assert "ipBlock" not in src, "ingress by IP range bypasses the namespace rule"
        for rule in policy["spec"].get("egress", []):
            ports = {(p.get("protocol", "TCP"), p.get("port")) for p in rule.get("ports", [])}
            assert ports, f"{namespace}/{name}: an egress rule without ports allows every port"
            for peer in rule.get("to", []):
                assert peer.get("namespaceSelector") != {}, f"{namespace}/{name}: every namespace"
                if peer.get("ipBlock", {}).get("cidr") == "0.0.0.0/0":
                    assert ports == {("TCP", 443)}, f"{namespace}/{name}: the internet on {ports}"


def test_the_stores_are_reachable_only_from_the_tracking_server(built: tuple[str, Path]) -> None:
    """MinIO (dev) and PostgreSQL admit the tracking server and no pipeline pod; the server reaches its
    artifact store (MinIO in dev, a cloud bucket over HTTPS in prod) and nothing else outside."""
    overlay, path = built
    docs = documents(path.read_text())
    step = netpol.pod(docs, PIPELINE_NS, {})
    server = netpol.pod(docs, MLFLOW_NS, {"app.kubernetes.io/name": "mlflow"})
    postgres = netpol.pod(docs, MLFLOW_NS, {"app.kubernetes.io/name": "postgres"})
    internet = netpol.Peer(address="198.51.100.7")
    assert netpol.refusal(docs, server, postgres, 5432) is None
    assert netpol.refusal(docs, step, postgres, 5432) is not None
    assert netpol.refusal(docs, postgres, internet, 443) is not None
    assert netpol.refusal(docs, step, server, 5000) is None
    if overlay == "dev":
        minio = netpol.pod(docs, MLFLOW_NS, {"app.kubernetes.io/name": "minio"})
        assert netpol.refusal(docs, server, minio, 9000) is None
        refused = netpol.refusal(docs, step, minio, 9000)
        assert refused is not None and "minio" in refused, refused
        assert netpol.refusal(docs, server, minio, 9001) is not None  # the console
        assert netpol.refusal(docs, server, internet, 443) is not None
    else:
        assert netpol.refusal(docs, server, internet, 443) is None
        assert netpol.refusal(docs, server, netpol.Peer(address="10.1.2.3"), 443) is not None


def test_pipeline_rbac_is_least_privilege(built: tuple[str, Path]) -> None:
    docs = documents(built[1].read_text())
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    role = by_kind(docs, "Role")["otdistill-runner"]
    assert role["metadata"]["namespace"] == PIPELINE_NS
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert ("argoproj.io", "workflowtaskresults", "create") in granted
    assert all("*" not in item for item in granted)
    forbidden = {"roles", "rolebindings", "pods/exec", "pods/log", "serviceaccounts"}
    assert not {r for _, r, _ in granted} & forbidden
    # Secrets and ConfigMaps only by name (the exact rules: tests/infra/test_cluster_contract.py).
    for rule in role["rules"]:
        if {"secrets", "configmaps"} & set(rule["resources"]):
            assert rule.get("resourceNames") and rule["verbs"] == ["get"], rule
    assert not {v for _, _, v in granted} & {"delete", "deletecollection", "escalate", "bind", "impersonate"}
    binding = by_kind(docs, "RoleBinding")["otdistill-runner"]
    runner = {"kind": "ServiceAccount", "name": "otdistill-runner", "namespace": PIPELINE_NS}
    assert binding["subjects"] == [runner]


def test_gpu_quota_caps_the_pipeline_namespace(built: tuple[str, Path]) -> None:
    """The GPU steps' tolerations and node selector come from the run config (validated as pod fields by
    tests/infra/test_cluster_contract.py); the manifests only cap the namespace's GPUs."""
    overlay, path = built
    quota = by_kind(documents(path.read_text()), "ResourceQuota")["otdistill-gpu-quota"]
    assert quota["metadata"]["namespace"] == PIPELINE_NS
    assert quota["spec"]["hard"] == {"requests.nvidia.com/gpu": {"dev": "1", "prod": "8"}[overlay]}


def test_overlays_differ_where_they_should(tmp_path: Path) -> None:
    dev = documents(kustomize_build(MANIFESTS / "overlays" / "dev"))
    prod = documents(kustomize_build(MANIFESTS / "overlays" / "prod"))
    assert "minio" in by_kind(dev, "Deployment") and "minio" not in by_kind(prod, "Deployment")
    assert by_kind(prod, "Deployment")["mlflow"]["spec"]["replicas"] == 2
    assert "mlflow" in by_kind(prod, "PodDisruptionBudget")
    cache = by_kind(prod, "PersistentVolumeClaim")["otdistill-model-cache"]["spec"]
    assert cache["accessModes"] == ["ReadWriteMany"]
    dev_s3 = by_kind(dev, "ConfigMap")["mlflow-server"]["data"]["MLFLOW_S3_ENDPOINT_URL"]
    prod_s3 = by_kind(prod, "ConfigMap")["mlflow-server"]["data"]["MLFLOW_S3_ENDPOINT_URL"]
    assert dev_s3 == "http://minio.otdistill-mlflow.svc.cluster.local:9000" and prod_s3 == ""


TYPOS = {
    # A required field misspelt: the Deployment has no containers.
    "required-field": ("containers:", "contianers:"),
    # An unknown field: only strict validation rejects it.
    "unknown-field": ("readinessProbe:", "readinesProbe:"),
}


@pytest.fixture(params=sorted(TYPOS))
def broken_manifests(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A copy of manifests/ with one deliberate typo in the tracking server's Deployment."""
    copy = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, copy)
    target = copy / "base" / "mlflow" / "mlflow-deployment.yaml"
    right, wrong = TYPOS[str(request.param)]
    text = target.read_text()
    assert right in text
    target.write_text(text.replace(right, wrong, 1))
    yield wrong.rstrip(":"), copy


def test_the_unbroken_copy_passes(tmp_path: Path) -> None:
    """The control for the typo test: the same check on the real manifests passes."""
    for directory in (MANIFESTS / "base", *(MANIFESTS / "overlays" / o for o in OVERLAYS)):
        passed, report = check_manifests(directory, tmp_path)
        assert passed, f"{directory}: {report}"


def test_a_typo_fails_the_check(broken_manifests: tuple[str, Path], tmp_path: Path) -> None:
    typo, copy = broken_manifests
    for directory in (copy / "base", *(copy / "overlays" / o for o in OVERLAYS)):
        passed, report = check_manifests(directory, tmp_path)
        assert not passed, f"{directory.name}: the typo {typo!r} went unnoticed"
        # Either the overlay's patch no longer applies or the schema rejects the Deployment.
        assert "kustomize build failed" in report or "deployment/mlflow" in report, report
        assert "containers" in report or typo in report, report


def test_secrets_made_from_the_templates_are_git_ignored() -> None:
    made = [
        f"manifests/secrets/{name}"
        for name in ("mlflow-db.yaml", "mlflow-auth.yaml", "minio-root.yaml", "prod.env")
    ]
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *made], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert sorted(ignored.stdout.split()) == sorted(made), ignored.stdout + ignored.stderr
    kept = subprocess.run(
        ["git", "check-ignore", "--no-index", "manifests/secrets/mlflow-db.example.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert kept.returncode == 1, "the templates themselves must stay tracked"
