"""The cluster contract between the compiled pipeline of a run config and a rendered overlay of manifests/.

A compiled pipeline names Kubernetes objects: the service account its pods run as, Secrets and ConfigMaps
(and their keys) it maps into the environment, the model-cache PVC, the images, the MLflow Service in the
tracking URI. Each must exist in the overlay, in the namespace the run uses, or be one the user creates with a
`kubectl create ...` command that manifests/README.md shows. The run's service account must be granted
exactly what Kubeflow Pipelines' driver and launcher and Argo's executor call (RUNNER_NEEDS, with the
source of each call), and every ConfigMap, PVC and ServiceAccount of the overlay must be used by something.

Every step pod must also be admitted by its namespace's Pod Security level (the pipeline namespace
enforces `restricted`) and be able to make the connections it needs under the overlay's NetworkPolicies:
DNS, the MLflow server, the KFP services the launcher calls, the Kubernetes API, and, when the config needs
them, the hub (HTTPS) and its S3 stores.

`check_run` and `check_overlay` return human-readable violations (empty: the contract holds); the tests
assert on them, and a mutated config shows that a wrong tracking host is reported.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import shlex
import urllib.parse
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from otdistill import images
from otdistill.config import RunConfig
from otdistill.models.hub import looks_like_hub_id
from tests.infra import netpol, pod_security
from tests.infra.manifest_tools import MANIFESTS, REPO

# Every run and sweep config; configs/paper_table/ holds the paper-table benchmark's plans (lists of sweep
# configs, benchmarks/paper_table.py), not configs of a pipeline.
CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml") if p.parent.name != "paper_table")
README = MANIFESTS / "README.md"

# Where the calls below are made. kubeflow/pipelines tag 2.17.0 (commit 4a3592cb2dd0), the backend of the
# kfp 2.17 SDK in constraints.txt; argoproj/argo-workflows v4.0.5, the argoexec that KFP 2.17.0 installs
# (manifests/kustomize/third-party/argo/base/workflow-controller-deployment-patch.yaml). Every pod of a
# run (drivers, step pods with the launcher and Argo's wait container) runs as the run's service account:
# backend/src/apiserver/template/template.go setDefaultServiceAccount sets the Workflow's
# spec.serviceAccountName.
KFP = "kubeflow/pipelines@2.17.0 backend/src/v2/"
ARGO = "argoproj/argo-workflows@v4.0.5 "

# (apiGroup, resource, verb, resourceName or None) -> the call that needs it.
RUNNER_NEEDS: dict[tuple[str, str, str, str | None], str] = {
    ("", "configmaps", "get", "kfp-launcher"): (
        KFP + 'driver/root_dag.go RootDAG -> config/env.go FromConfigMap: ConfigMaps(ns).Get("kfp-launcher") '
        "(pipeline root, bucket providers; NotFound tolerated, Forbidden fails the run)"
    ),
    ("", "secrets", "get", "mlpipeline-minio-artifact"): (
        KFP + "component/launcher_v2.go LauncherV2.Execute -> objectstore/object_store.go OpenBucket -> "
        "createS3BucketSession -> getS3BucketCredential: Secrets(ns).Get(secretName); the default name and "
        "keys are config/env.go getDefaultMinioSessionInfo's (before the step's code runs)"
    ),
    ("", "pods", "get", None): (
        KFP + "component/launcher_v2.go retryIndexFromPodAnnotation: Pods(ns).Get(own pod) when "
        "KFP_RETRY_INDEX is unset (steps without a retry policy)"
    ),
    ("argoproj.io", "workflowtaskresults", "create", None): (
        ARGO + "workflow/executor/taskresult.go createTaskResult (docs/workflow-rbac.md, >= v3.4)"
    ),
    ("argoproj.io", "workflowtaskresults", "patch", None): (
        ARGO + "workflow/executor/taskresult.go patchTaskResult (docs/workflow-rbac.md, >= v3.4)"
    ),
}
# Keys KFP reads from the objects it names (config/env.go minioArtifactAccessKeyKey / SecretKeyKey).
RUNNER_OBJECT_KEYS: dict[tuple[str, str], frozenset[str]] = {
    ("ConfigMap", "kfp-launcher"): frozenset(),
    ("Secret", "mlpipeline-minio-artifact"): frozenset({"accesskey", "secretkey"}),
}
# The label on which KFP's multi-user profile controller creates kfp-launcher and
# mlpipeline-minio-artifact in a namespace (manifests/kustomize/base/installs/multi-user/
# pipelines-profile-controller/decorator-controller.yaml, sync.py).
KFP_NAMESPACE_LABEL = ("pipelines.kubeflow.org/enabled", "true")
# Placeholders whose resolution makes the driver read the Argo Workflow (cmd/driver/main.go
# getCurrentWorkflowMetadata: argoproj.io workflows get), which RUNNER_NEEDS does not grant.
WORKFLOW_READING_PLACEHOLDERS = ("{{$.pipeline_job_create_time_utc}}", "{{$.pipeline_job_schedule_time_utc}}")
# What each step records as its image (lineage); pipelines/cluster.py sets it to the image it runs.
IMAGE_ENV = "OTDISTILL_CONTAINER_IMAGE"

KINDS = {"configmaps": "ConfigMap", "secrets": "Secret"}
# The kfp-kubernetes settings this contract turns into pod fields; any other one is reported, so a new
# setting cannot slip past the check.
PLATFORM_KEYS = {
    "activeDeadlineSeconds",
    "configMapAsEnv",
    "fieldPathAsEnv",
    "imagePullPolicy",
    "imagePullSecret",
    "nodeSelector",
    "pvcMount",
    "secretAsEnv",
    "securityContext",
    "tolerations",
}
# What KFP's compiler puts on every step: the pod's seccomp profile and the main container's hardening
# (kubeflow/pipelines@2.17.0 backend/src/v2/compiler/argocompiler/security_context.go
# applySecurityContextToExecutorTemplate: applyPodSeccompProfileOnly, defaultUserContainerSecurityContext);
# the identity fields come from kfp-kubernetes' securityContext (driver/k8s.go, SDK values unless an admin
# default is set). Argo's init / wait containers and KFP's launcher init container are hardened by KFP's
# own install (workflow-controller-configmap `executor.securityContext`, applySecurityContextToContainer).
KFP_POD_SECURITY = {"seccompProfile": {"type": "RuntimeDefault"}}
KFP_CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
# The Pod Security level the pipeline namespace must enforce (manifests/base/namespaces.yaml).
PIPELINE_POD_SECURITY = "restricted"

# Connections every pipeline pod makes besides MLflow's (whose address comes from the config). Pod ports,
# as NetworkPolicies see them. KFP's addresses: kubeflow/pipelines@2.17.0 (manifests/base/pipeline/
# networkpolicies.yaml cites each source).
KFP_NAMESPACE = "kubeflow"
REQUIRED_CONNECTIONS: list[tuple[str, str, dict[str, str], int, str]] = [
    ("DNS (kube-dns)", "kube-system", {"k8s-app": "kube-dns"}, 53, "UDP"),
    ("DNS (kube-dns)", "kube-system", {"k8s-app": "kube-dns"}, 53, "TCP"),
    (
        "the KFP API server ml-pipeline:8887 (launcher-v2 --ml_pipeline_server_port, config/env.go)",
        KFP_NAMESPACE,
        {"app": "ml-pipeline"},
        8887,
        "TCP",
    ),
    (
        "ML Metadata metadata-grpc-service:8080 (metadata/env.go GetMetadataConfig)",
        KFP_NAMESPACE,
        {"component": "metadata-grpc-server"},
        8080,
        "TCP",
    ),
    (
        "KFP's artifact store seaweedfs:9000 -> 8333 (objectstore/config.go DefaultEndpointInMultiUserMode)",
        KFP_NAMESPACE,
        {"app": "seaweedfs"},
        8333,
        "TCP",
    ),
]
# The policy whose ipBlock is the Kubernetes API server's address; the base's placeholder (TEST-NET-1) must
# be replaced by each overlay. The launcher and Argo's executor call the API (pipeline/rbac.yaml).
APISERVER_POLICY = "pipelines-to-kube-apiserver"
APISERVER_PORTS = (443, 6443)
PLACEHOLDER_NET = ipaddress.ip_network("192.0.2.0/24")
# Stands in for the hub's and a cloud S3's public addresses (TEST-NET-2: public, never a cluster's).
PUBLIC_ADDRESS = "198.51.100.7"


# --------------------------------------------------------------------------------------------------------
# Compiled runs


@dataclass
class CompiledRun:
    """One run config compiled with the project's own compile function (what `otdistill compile` writes)."""

    label: str
    config: RunConfig
    pipeline: dict[str, Any]
    platform: dict[str, Any]

    @property
    def executors(self) -> dict[str, Any]:
        return dict(self.pipeline["deploymentSpec"]["executors"])

    @property
    def k8s(self) -> dict[str, Any]:
        platforms = self.platform.get("platforms", {}).get("kubernetes", {})
        return dict(platforms.get("deploymentSpec", {}).get("executors", {}))

    def parameter_default(self, name: str) -> Any:
        return self.pipeline["root"]["inputDefinitions"]["parameters"][name].get("defaultValue")


def compile_run(path: Path, workdir: Path, label: str | None = None) -> CompiledRun:
    from otdistill.pipelines.submit import build_pipeline, compile_pipeline
    from otdistill.sweep.config import is_sweep_config, load_sweep

    build: Any = build_pipeline
    if is_sweep_config(path):  # configs/sweeps/: the sweep pipeline over its run config
        from otdistill.pipelines.sweep_pipeline import build_sweep_pipeline

        cfg, sweep = load_sweep(path)
        build = lambda c: build_sweep_pipeline(c, sweep)  # noqa: E731
    else:
        cfg = RunConfig.from_yaml(path)
    label = label or str(path.relative_to(REPO / "configs"))
    output = workdir / (label.replace("/", "__") + ".pipeline.yaml")
    # On a fresh, shallow stack: kfp's PipelineTask._ensure_container_spec_exists calls inspect.stack() for
    # every task setting, which under pytest's deep stack costs ~0.4 s each (~30 s per config) and ~1 s in
    # all from a worker thread. One compile at a time (kfp's pipeline context is global).
    with ThreadPoolExecutor(max_workers=1) as worker:
        out = worker.submit(compile_pipeline, cfg, output, build).result()
    docs = list(yaml.safe_load_all(out.read_text()))
    pipeline = docs[0]
    platform = docs[1] if len(docs) > 1 else {}
    return CompiledRun(label, cfg, pipeline, platform)


def _constant(setting: dict[str, Any], plain: str, parameter: str) -> str | None:
    """A name that kfp-kubernetes wrote as a constant (None: it comes from a pipeline parameter)."""
    if setting.get(plain):
        return str(setting[plain])
    value = setting.get(parameter, {}).get("runtimeValue", {}).get("constant")
    return str(value) if value else None


def step_pods(run: CompiledRun, namespace: str) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The Pod each executor becomes, as the KFP driver patches it (kubeflow/pipelines backend/src/v2/driver/
    k8s.go: env from secretAsEnv / configMapAsEnv / fieldPathAsEnv, PVC mounts, node selector, tolerations,
    pull secrets, deadline), plus the settings that could not be turned into pod fields."""
    problems: list[str] = []
    pods: dict[str, dict[str, Any]] = {}
    for name, executor in sorted(run.executors.items()):
        container_spec = executor.get("container")
        if container_spec is None:
            problems.append(f"{run.label}: executor {name} is not a container ({sorted(executor)})")
            continue
        k8s = run.k8s.get(name, {})
        unknown = sorted(set(k8s) - PLATFORM_KEYS)
        if unknown:
            problems.append(
                f"{run.label}: {name} uses kfp-kubernetes settings the contract does not check: {unknown}"
            )
        env: list[dict[str, Any]] = [dict(e) for e in container_spec.get("env", [])]
        for secret in k8s.get("secretAsEnv", []):
            secret_name = _constant(secret, "secretName", "secretNameParameter")
            if secret_name is None:
                problems.append(f"{run.label}: {name} takes a Secret name from a pipeline parameter")
                continue
            for item in secret["keyToEnv"]:
                ref = {
                    "name": secret_name,
                    "key": item["secretKey"],
                    "optional": bool(secret.get("optional")),
                }
                env.append({"name": item["envVar"], "valueFrom": {"secretKeyRef": ref}})
        for config_map in k8s.get("configMapAsEnv", []):
            cm_name = _constant(config_map, "configMapName", "configMapNameParameter")
            if cm_name is None:
                problems.append(f"{run.label}: {name} takes a ConfigMap name from a pipeline parameter")
                continue
            for item in config_map["keyToEnv"]:
                ref = {
                    "name": cm_name,
                    "key": item["configMapKey"],
                    "optional": bool(config_map.get("optional")),
                }
                env.append({"name": item["envVar"], "valueFrom": {"configMapKeyRef": ref}})
        for field_env in k8s.get("fieldPathAsEnv", []):
            env.append(
                {"name": field_env["name"], "valueFrom": {"fieldRef": {"fieldPath": field_env["fieldPath"]}}}
            )
        security = dict(KFP_CONTAINER_SECURITY)
        for key, value in k8s.get("securityContext", {}).items():
            security[key] = int(value) if key in ("runAsUser", "runAsGroup") else value
        container: dict[str, Any] = {
            "name": "main",
            "image": container_spec["image"],
            "env": env,
            "securityContext": security,
        }
        if k8s.get("imagePullPolicy"):
            container["imagePullPolicy"] = k8s["imagePullPolicy"]
        resources = container_spec.get("resources", {})
        requests = {
            key: resources[field]
            for key, field in (("cpu", "resourceCpuRequest"), ("memory", "resourceMemoryRequest"))
            if resources.get(field)
        }
        limits = {
            key: resources[field]
            for key, field in (("cpu", "resourceCpuLimit"), ("memory", "resourceMemoryLimit"))
            if resources.get(field)
        }
        accelerator = resources.get("accelerator", {})
        if accelerator.get("resourceType"):
            limits[accelerator["resourceType"]] = accelerator.get("resourceCount") or accelerator.get("count")
        container["resources"] = {k: v for k, v in (("requests", requests), ("limits", limits)) if v}
        spec: dict[str, Any] = {
            "restartPolicy": "Never",
            "securityContext": dict(KFP_POD_SECURITY),
            "containers": [container],
        }
        if run.config.cluster.service_account:
            spec["serviceAccountName"] = run.config.cluster.service_account
        if k8s.get("activeDeadlineSeconds"):
            spec["activeDeadlineSeconds"] = int(k8s["activeDeadlineSeconds"])
        if k8s.get("nodeSelector", {}).get("labels"):
            spec["nodeSelector"] = dict(k8s["nodeSelector"]["labels"])
        if k8s.get("tolerations"):
            spec["tolerations"] = [dict(t) for t in k8s["tolerations"]]
        pull = [_constant(s, "secretName", "secretNameParameter") for s in k8s.get("imagePullSecret", [])]
        if pull:
            spec["imagePullSecrets"] = [{"name": n} for n in pull if n]
        for mount in k8s.get("pvcMount", []):
            claim = _constant(mount, "constant", "pvcNameParameter")
            if claim is None:
                problems.append(f"{run.label}: {name} takes a PVC name from a pipeline parameter")
                continue
            spec.setdefault("volumes", []).append(
                {"name": claim, "persistentVolumeClaim": {"claimName": claim}}
            )
            container.setdefault("volumeMounts", []).append({"name": claim, "mountPath": mount["mountPath"]})
        pods[name] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"{run.config.name}-{name}".lower()[:63].strip("-"), "namespace": namespace},
            "spec": spec,
        }
    return pods, problems


# --------------------------------------------------------------------------------------------------------
# References of pod specs (compiled steps and the overlay's own workloads alike)


@dataclass(frozen=True)
class Ref:
    kind: str
    name: str
    keys: frozenset[str] = frozenset()


def pod_refs(spec: dict[str, Any]) -> list[Ref]:
    """The ServiceAccount, Secrets, ConfigMaps (with keys) and PVCs a pod spec needs."""
    refs = [Ref("ServiceAccount", spec.get("serviceAccountName") or "default")]
    for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        for env in container.get("env", []):
            source = env.get("valueFrom", {})
            if "secretKeyRef" in source:
                refs.append(
                    Ref("Secret", source["secretKeyRef"]["name"], frozenset({source["secretKeyRef"]["key"]}))
                )
            if "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                refs.append(Ref("ConfigMap", ref["name"], frozenset({ref["key"]})))
        for env_from in container.get("envFrom", []):
            if "configMapRef" in env_from:
                refs.append(Ref("ConfigMap", env_from["configMapRef"]["name"]))
            if "secretRef" in env_from:
                refs.append(Ref("Secret", env_from["secretRef"]["name"]))
    for volume in spec.get("volumes", []):
        if "persistentVolumeClaim" in volume:
            refs.append(Ref("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]))
        if "configMap" in volume:
            refs.append(Ref("ConfigMap", volume["configMap"]["name"]))
        if "secret" in volume:
            refs.append(Ref("Secret", volume["secret"]["secretName"]))
    for pull in spec.get("imagePullSecrets", []):
        refs.append(Ref("Secret", pull["name"], frozenset({".dockerconfigjson"})))
    return refs


def workload_pods(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(namespace, pod template metadata, pod spec) of the overlay's workloads."""
    out = []
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            template = doc["spec"]["template"]
            out.append(
                (doc["metadata"].get("namespace", "default"), template.get("metadata", {}), template["spec"])
            )
    return out


def find(
    docs: list[dict[str, Any]], kind: str, name: str, namespace: str | None = None
) -> dict[str, Any] | None:
    for doc in docs:
        meta = doc["metadata"]
        if (
            doc["kind"] == kind
            and meta["name"] == name
            and (namespace is None or meta.get("namespace") == namespace)
        ):
            return doc
    return None


def object_keys(doc: dict[str, Any]) -> set[str]:
    return set(doc.get("data") or {}) | set(doc.get("stringData") or {}) | set(doc.get("binaryData") or {})


# --------------------------------------------------------------------------------------------------------
# What manifests/README.md documents as user-provided: its `kubectl create` commands


def documented_objects(readme: str) -> dict[tuple[str, str, str], frozenset[str]]:
    """(kind, namespace, name) -> keys, from the `kubectl ... create secret|configmap` commands in the
    README's fenced code blocks (continuation lines joined, comments dropped)."""
    found: dict[tuple[str, str, str], frozenset[str]] = {}
    for block in re.findall(r"```[a-z]*\n(.*?)```", readme, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            try:
                words = shlex.split(line, comments=True)
            except ValueError:
                continue
            if not words or Path(words[0]).name != "kubectl" or "create" not in words:
                continue
            namespace, keys, rest = "default", set(), []
            i = 1
            while i < len(words):
                word = words[i]
                if word in ("-n", "--namespace") and i + 1 < len(words):
                    namespace, i = words[i + 1], i + 2
                    continue
                if word.startswith("--namespace="):
                    namespace = word.split("=", 1)[1]
                elif word.startswith(("--from-literal=", "--from-file=")):
                    keys.add(word.split("=", 2)[1])
                elif not word.startswith("-"):
                    rest.append(word)
                i += 1
            rest = rest[rest.index("create") + 1 :]
            if rest[:2] == ["secret", "generic"] and len(rest) > 2:
                found[("Secret", namespace, rest[2])] = frozenset(keys)
            elif rest[:2] == ["secret", "docker-registry"] and len(rest) > 2:
                found[("Secret", namespace, rest[2])] = frozenset({".dockerconfigjson"})
            elif rest[:1] == ["configmap"] and len(rest) > 1:
                found[("ConfigMap", namespace, rest[1])] = frozenset(keys)
    return found


def provided(
    ref: Ref,
    namespace: str,
    docs: list[dict[str, Any]],
    documented: dict[tuple[str, str, str], frozenset[str]],
) -> str | None:
    """None if `ref` exists in the overlay (with its keys) or is documented with a command that creates
    it with its keys; else what is wrong."""
    doc = find(docs, ref.kind, ref.name, namespace)
    if doc is not None:
        missing = ref.keys - object_keys(doc) if ref.kind in ("Secret", "ConfigMap") else set()
        return f"{ref.kind} {namespace}/{ref.name} has no key(s) {sorted(missing)}" if missing else None
    if (ref.kind, namespace, ref.name) in documented:
        missing = ref.keys - documented[(ref.kind, namespace, ref.name)]
        if missing:
            return (
                f"{ref.kind} {namespace}/{ref.name}: the command in manifests/README.md creates no key(s) "
                f"{sorted(missing)}"
            )
        return None
    elsewhere = sorted(k[1] for k in documented if k[0] == ref.kind and k[2] == ref.name)
    hint = f" (documented in namespace {elsewhere} instead)" if elsewhere else ""
    return (
        f"{ref.kind} {namespace}/{ref.name} (keys {sorted(ref.keys)}) is neither in the overlay nor created "
        f"by a `kubectl create` command in manifests/README.md{hint}"
    )


# --------------------------------------------------------------------------------------------------------
# RBAC


def granted(
    docs: list[dict[str, Any]], namespace: str, account: str
) -> tuple[set[tuple[Any, ...]], list[str]]:
    """Every (apiGroup, resource, verb, resourceName|None) the overlay grants `namespace/account` in its
    namespace, and grants outside it (ClusterRoleBindings, RoleBindings elsewhere) as problems."""
    rules: set[tuple[Any, ...]] = set()
    problems: list[str] = []
    for binding in docs:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        binding_ns = binding["metadata"].get("namespace")
        subjects = {
            (s["kind"], s["name"], s.get("namespace", binding_ns)) for s in binding.get("subjects", [])
        }
        if ("ServiceAccount", account, namespace) not in subjects:
            continue
        where = f"{binding['kind']} {binding_ns or ''}/{binding['metadata']['name']}"
        if binding["kind"] == "ClusterRoleBinding" or binding_ns != namespace:
            problems.append(f"{where} grants {namespace}/{account} rights outside its namespace")
            continue
        ref = binding["roleRef"]
        role = find(docs, ref["kind"], ref["name"], binding_ns if ref["kind"] == "Role" else None)
        if role is None:
            problems.append(
                f"{where} binds {ref['kind']} {ref['name']}, which the overlay does not define "
                "(its rules cannot be checked)"
            )
            continue
        for rule in role.get("rules", []):
            if rule.get("nonResourceURLs"):
                rules.add(("nonResourceURLs", tuple(rule["nonResourceURLs"]), tuple(rule["verbs"]), None))
            for group in rule.get("apiGroups", []):
                for resource in rule.get("resources", []):
                    for verb in rule.get("verbs", []):
                        for name in rule.get("resourceNames") or [None]:
                            rules.add((group, resource, verb, name))
    return rules, problems


# --------------------------------------------------------------------------------------------------------
# The tracking server


def service_of(host: str, default_namespace: str) -> tuple[str, str] | None:
    """(service, namespace) for an in-cluster host name (`svc`, `svc.ns`, `svc.ns.svc[.cluster.local]`)."""
    parts = host.split(".")
    if len(parts) == 1:
        return parts[0], default_namespace
    if len(parts) == 2:
        return parts[0], parts[1]
    if parts[2] == "svc":
        return parts[0], parts[1]
    return None


def check_tracking_uri(
    uri: str, where: str, pipeline_namespace: str, docs: list[dict[str, Any]]
) -> list[str]:
    """The URI names a Service of the overlay, on one of its ports, with pods behind it, reachable from the
    pipeline namespace under the overlay's NetworkPolicies."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return [
            f"tracking URI {uri!r} ({where}) is not an http(s) server: a store inside a step's pod is lost "
            "when the pod ends"
        ]
    return check_service_uri(uri, "tracking URI", where, pipeline_namespace, docs)


def check_service_uri(
    uri: str, what: str, where: str, pipeline_namespace: str, docs: list[dict[str, Any]]
) -> list[str]:
    """An http(s) URI of an in-cluster Service: the Service exists with that port and pods behind it, and a
    pipeline pod may connect to them (egress of the pipeline namespace, ingress of the Service's)."""
    parts = urllib.parse.urlsplit(uri)
    what = f"{what} {uri}"
    target = service_of(parts.hostname, pipeline_namespace) if parts.hostname else None
    if target is None:
        return [f"{what} ({where}): host {parts.hostname} is not a Service of the overlay"]
    name, namespace = target
    service = find(docs, "Service", name, namespace)
    if service is None:
        services = sorted(
            f"{d['metadata'].get('namespace')}/{d['metadata']['name']}"
            for d in docs
            if d["kind"] == "Service"
        )
        return [
            f"{what} ({where}): no Service {name} in namespace {namespace} "
            f"(the overlay's Services: {', '.join(services)})"
        ]
    port = parts.port or (443 if parts.scheme == "https" else 80)
    service_ports = [p for p in service["spec"].get("ports", []) if p["port"] == port]
    if not service_ports:
        return [f"{what} ({where}): Service {namespace}/{name} has no port {port}"]
    target_port = service_ports[0].get("targetPort", port)
    backends = [
        (meta, spec)
        for ns, meta, spec in workload_pods(docs)
        if ns == namespace
        and netpol.matches({"matchLabels": service["spec"].get("selector", {})}, meta.get("labels", {}))
    ]
    if not backends:
        return [f"{what} ({where}): Service {namespace}/{name} selects no workload of the overlay"]
    meta, spec = backends[0]
    numbers = {(p.get("name"), p["containerPort"]) for c in spec["containers"] for p in c.get("ports", [])}
    port_name, port_number = next(((n, p) for n, p in numbers if target_port in (n, p)), (None, target_port))
    if not isinstance(port_number, int):
        return [f"{what} ({where}): targetPort {target_port} of {namespace}/{name} is no container port"]
    refused = netpol.refusal(
        docs,
        step_peer(docs, pipeline_namespace),
        netpol.pod(docs, namespace, meta.get("labels", {})),
        port_number,
        port_name=port_name,
    )
    if refused:
        return [f"{what} ({where}): Service {namespace}/{name} is unreachable from the steps: {refused}"]
    return []


# --------------------------------------------------------------------------------------------------------
# Network and pod security of the step pods


def step_peer(docs: list[dict[str, Any]], namespace: str) -> netpol.Peer:
    """A pipeline pod as NetworkPolicies see it. KFP labels its pods with run and task ids only, so the
    pipeline namespace's policies must select every pod (podSelector {}): a pod is modelled unlabelled."""
    return netpol.pod(docs, namespace, {})


def _walk_strings(value: Any, key: str = "") -> Iterable[tuple[str, str]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk_strings(v, str(k))
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _walk_strings(v, key)
    elif isinstance(value, str):
        yield key, value


def external_needs(config: RunConfig) -> tuple[bool, set[str], bool]:
    """(needs the hub, S3 endpoint URLs named, uses s3:// with the default (public AWS) endpoint)."""
    hub = any(
        looks_like_hub_id(source) and not Path(source).exists()
        for source in (config.teacher.source, config.student.source, config.data.source)
    )
    strings = list(_walk_strings(dataclasses.asdict(config)))
    endpoints = {v for k, v in strings if k == "s3_endpoint_url" and v}
    uses_s3 = any(v.startswith("s3://") for _, v in strings)
    return hub, endpoints, uses_s3 and not endpoints


def connection_problems(run: CompiledRun, namespace: str, docs: list[dict[str, Any]]) -> list[str]:
    """The connections a step pod of `run` makes that the overlay's NetworkPolicies refuse (MLflow's is
    checked with the tracking URI)."""
    problems: list[str] = []
    source = step_peer(docs, namespace)
    for what, target_ns, labels, port, protocol in REQUIRED_CONNECTIONS:
        refused = netpol.refusal(docs, source, netpol.pod(docs, target_ns, labels), port, protocol)
        if refused:
            problems.append(f"{run.label}: the steps cannot reach {what}: {refused}")
    policy = find(docs, "NetworkPolicy", APISERVER_POLICY, namespace)
    blocks = [
        ipaddress.ip_network(peer["ipBlock"]["cidr"])
        for rule in (policy or {}).get("spec", {}).get("egress", [])
        for peer in rule.get("to", [])
        if "ipBlock" in peer
    ]
    if not blocks:
        problems.append(
            f"{run.label}: no NetworkPolicy {namespace}/{APISERVER_POLICY} names the Kubernetes API server's "
            "address, which KFP's launcher and Argo's executor call"
        )
    for block in blocks:
        if block.subnet_of(PLACEHOLDER_NET):  # type: ignore[arg-type]
            problems.append(
                f"{run.label}: {namespace}/{APISERVER_POLICY} still holds the placeholder {block}: set the "
                "API server's address in the overlay"
            )
            continue
        address = netpol.Peer(address=str(next(iter(block.hosts()), block.network_address)))
        refusals = [netpol.refusal(docs, source, address, port) for port in APISERVER_PORTS]
        if all(refusals):
            problems.append(f"{run.label}: the steps cannot reach the Kubernetes API: {refusals[0]}")
    hub, endpoints, public_s3 = external_needs(run.config)
    public = netpol.Peer(address=PUBLIC_ADDRESS)
    for needed, what in ((hub, "the Hugging Face hub"), (public_s3, "S3 (s3:// with the default endpoint)")):
        refused = netpol.refusal(docs, source, public, 443) if needed else None
        if refused:
            problems.append(
                f"{run.label}: the config needs {what} over HTTPS, but {refused} "
                "(components/pipelines-https-egress)"
            )
    for endpoint in sorted(endpoints):
        host = urllib.parse.urlsplit(endpoint).hostname or ""
        target = service_of(host, namespace)
        if target and find(docs, "Service", *target):
            problems += [
                f"{run.label}: {p}"
                for p in check_service_uri(endpoint, "S3 endpoint", "s3_endpoint_url", namespace, docs)
            ]
        else:
            port = urllib.parse.urlsplit(endpoint).port or (443 if endpoint.startswith("https") else 80)
            refused = netpol.refusal(docs, source, public, port)
            if refused:
                problems.append(f"{run.label}: the S3 endpoint {endpoint} is unreachable: {refused}")
    return problems


def pod_security_problems(
    label: str, pods: dict[str, dict[str, Any]], namespace_doc: dict[str, Any] | None
) -> list[str]:
    """The pipeline namespace enforces `restricted`, and every step pod is admitted under it."""
    namespace = (namespace_doc or {}).get("metadata", {}).get("name", "?")
    level = pod_security.enforced_level(namespace_doc)
    problems = []
    if level != PIPELINE_POD_SECURITY:
        problems.append(
            f"namespace {namespace} enforces Pod Security {level!r}, not {PIPELINE_POD_SECURITY!r} "
            f"({pod_security.ENFORCE_LABEL})"
        )
    for step, pod_doc in pods.items():
        for violation in pod_security.violations(pod_doc["spec"], PIPELINE_POD_SECURITY):
            problems.append(
                f"{label}: {step} would be refused by Pod Security {PIPELINE_POD_SECURITY}: {violation}"
            )
    return problems


# --------------------------------------------------------------------------------------------------------
# The checks


def check_run(
    run: CompiledRun,
    docs: list[dict[str, Any]],
    documented: dict[tuple[str, str, str], frozenset[str]],
) -> list[str]:
    """Everything the compiled run references, against one rendered overlay. [] when the contract holds."""
    problems: list[str] = []
    cluster = run.config.cluster
    account = cluster.service_account
    if not account:
        return [f"{run.label}: cluster.service_account is empty: the pods would run as KFP's default account"]
    accounts = [d for d in docs if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == account]
    if len(accounts) != 1:
        return [
            f"{run.label}: the overlay defines {len(accounts)} ServiceAccount(s) named {account}, not one"
        ]
    namespace = accounts[0]["metadata"].get("namespace", "default")
    if accounts[0].get("automountServiceAccountToken") is False:
        problems.append(
            f"ServiceAccount {namespace}/{account} does not mount its token; the KFP driver and "
            "launcher use it (backend/src/v2/client_manager/client_manager.go initK8sClient)"
        )
    ns_doc = find(docs, "Namespace", namespace)
    if ns_doc is None:
        problems.append(f"the overlay does not create namespace {namespace} (of ServiceAccount {account})")
    elif (ns_doc["metadata"].get("labels") or {}).get(KFP_NAMESPACE_LABEL[0]) != KFP_NAMESPACE_LABEL[1]:
        problems.append(
            f"namespace {namespace} lacks the label {'='.join(KFP_NAMESPACE_LABEL)}: KFP's profile "
            "controller will not create kfp-launcher / mlpipeline-minio-artifact there"
        )

    # The service account's permissions: exactly what KFP and Argo call.
    rules, rbac_problems = granted(docs, namespace, account)
    problems += rbac_problems
    for rule in sorted(set(RUNNER_NEEDS) - rules, key=str):
        problems.append(f"{namespace}/{account} is not granted {rule}, needed by {RUNNER_NEEDS[rule]}")
    for rule in sorted(rules - set(RUNNER_NEEDS), key=str):
        problems.append(
            f"{namespace}/{account} is granted {rule}, which no KFP / Argo call of this "
            "pipeline needs (tests/infra/cluster_contract.py RUNNER_NEEDS)"
        )
    for group, resource, _verb, name in RUNNER_NEEDS:
        if name and group == "":
            kind = KINDS[resource]
            problem = provided(Ref(kind, name, RUNNER_OBJECT_KEYS[(kind, name)]), namespace, docs, documented)
            if problem:
                problems.append(f"read by KFP: {problem}")

    # The pods the steps run in: referenced objects, images, Pod Security, network.
    pods, pod_problems = step_pods(run, namespace)
    problems += pod_problems
    problems += pod_security_problems(run.label, pods, ns_doc)
    problems += connection_problems(run, namespace, docs)
    seen: dict[Ref, list[str]] = {}
    for step, pod in pods.items():
        for ref in pod_refs(pod["spec"]):
            seen.setdefault(ref, []).append(step)
        container = pod["spec"]["containers"][0]
        image = container["image"]
        gpu = any(k not in ("cpu", "memory") for k in container.get("resources", {}).get("limits", {}))
        expected = images.CUDA if gpu else images.CPU
        if not images.is_role_image(image, expected):
            problems.append(
                f"{run.label}: {step} runs {image}, not {'images.CUDA' if gpu else 'images.CPU'} "
                f"({expected}) of otdistill.images, by its tag or a digest"
            )
        recorded = {e["name"]: e.get("value") for e in container["env"]}.get(IMAGE_ENV)
        if recorded != image:
            problems.append(f"{run.label}: {step} records {IMAGE_ENV}={recorded!r} but runs {image}")
        if gpu:
            problems += _quota_problems(run.label, step, container, namespace, docs)
    for ref, steps in sorted(seen.items(), key=lambda item: (item[0].kind, item[0].name)):
        if ref.kind == "ServiceAccount":
            continue  # checked above
        problem = provided(ref, namespace, docs, documented)
        if problem:
            problems.append(f"{run.label} ({', '.join(sorted(set(steps)))}): {problem}")

    # Placeholders that would make the driver read the Workflow (not granted).
    text = json.dumps(run.pipeline)
    for placeholder in WORKFLOW_READING_PLACEHOLDERS:
        if placeholder in text:
            problems.append(
                f"{run.label}: uses {placeholder}; the KFP driver then reads the Argo Workflow "
                "(cmd/driver/main.go getCurrentWorkflowMetadata), which the runner Role does not grant"
            )

    # The MLflow server: the config's URI (set as every step's environment) or the ConfigMap's.
    tracking_env = [
        [e for e in pod["spec"]["containers"][0]["env"] if e["name"] == "MLFLOW_TRACKING_URI"]
        for pod in pods.values()
    ]
    env_sources = [
        e["valueFrom"]["configMapKeyRef"]
        for env in tracking_env
        for e in env
        if "configMapKeyRef" in e.get("valueFrom", {})
    ]
    for uri in sorted({e["value"] for env in tracking_env for e in env if e.get("value")}):
        problems += [
            f"{run.label}: {p}" for p in check_tracking_uri(uri, "tracking.tracking_uri", namespace, docs)
        ]
    if not all(tracking_env):
        problems.append(
            f"{run.label}: not every step gets MLFLOW_TRACKING_URI (tracking.tracking_uri or the tracking "
            "ConfigMap): steps would log to pod-local stores"
        )
    problems += login_problems(run.label, pods, docs)
    for source in {(s["name"], s["key"]) for s in env_sources}:
        cm = find(docs, "ConfigMap", source[0], namespace)
        value = (cm or {}).get("data", {}).get(source[1])
        if value:
            where = f"ConfigMap {namespace}/{source[0]}"
            problems += [f"{run.label}: {p}" for p in check_tracking_uri(value, where, namespace, docs)]
        elif cm is not None:
            problems.append(f"{run.label}: ConfigMap {namespace}/{source[0]} has no value for {source[1]}")
    return problems


MLFLOW_LOGIN_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def login_problems(label: str, pods: dict[str, dict[str, Any]], docs: list[dict[str, Any]]) -> list[str]:
    """When the overlay's MLflow runs the basic-auth app, every step logs in: each step pod gets the
    pipeline's login (`cluster.secrets` mapping MLFLOW_TRACKING_USERNAME / _PASSWORD) from a Secret; a step
    without it is answered 401 on its first call."""
    auth = any(
        "--app-name=basic-auth" in (c.get("args") or []) + (c.get("command") or [])
        for _ns, _meta, spec in workload_pods(docs)
        for c in spec.get("containers", [])
    )
    if not auth:
        return []
    problems = []
    for step, pod in sorted(pods.items()):
        env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
        missing = [n for n in MLFLOW_LOGIN_ENV if "secretKeyRef" not in env.get(n, {}).get("valueFrom", {})]
        if missing:
            problems.append(
                f"{label}: {step} gets no {' / '.join(missing)} from a Secret, but the overlay's MLflow "
                "runs basic-auth: list the pipeline's login (mlflow-pipeline-credentials) in cluster.secrets"
            )
    return problems


def _quota_problems(
    label: str, step: str, container: dict[str, Any], namespace: str, docs: list[dict[str, Any]]
) -> list[str]:
    """A GPU step's accelerator is the resource the namespace's GPU quota caps (else it caps nothing)."""
    quotas = [d for d in docs if d["kind"] == "ResourceQuota" and d["metadata"].get("namespace") == namespace]
    if not quotas:
        return []
    capped = {
        k.split(".", 1)[1] for q in quotas for k in q["spec"].get("hard", {}) if k.startswith("requests.")
    }
    extended = {k for k in container["resources"]["limits"] if k not in ("cpu", "memory")}
    missing = extended - capped
    if missing:
        return [
            f"{label}: {step} requests {sorted(missing)}, which no ResourceQuota of {namespace} caps "
            f"(they cap {sorted(capped)})"
        ]
    return []


def check_overlay(
    docs: list[dict[str, Any]],
    runs: Iterable[CompiledRun],
    documented: dict[tuple[str, str, str], frozenset[str]],
) -> list[str]:
    """Overlay-wide: project images are otdistill.images' (the MLflow server runs images.MLFLOW); every
    ConfigMap, PVC and ServiceAccount is used by a workload, a compiled run or the runner Role; every
    object the README documents for the pipeline namespace is referenced by a run or the Role."""
    problems: list[str] = []
    registry = images.REGISTRY + "/"
    for namespace, meta, spec in workload_pods(docs):
        for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
            image = container["image"]
            try:
                images.check_reference(image, f"{namespace} container {container['name']}")
            except images.ImageReferenceError as error:
                problems.append(str(error))
                continue
            if image.startswith(registry) and not any(
                images.is_role_image(image, role) for role in images.IMAGES.values()
            ):
                problems.append(f"{namespace}: image {image} is not one of otdistill.images {images.IMAGES}")
        level = pod_security.enforced_level(find(docs, "Namespace", namespace))
        for violation in pod_security.violations(spec, level):
            problems.append(
                f"{namespace}: a pod of {meta.get('labels', {}).get('app.kubernetes.io/name', '?')} would be "
                f"refused by Pod Security {level}: {violation}"
            )
    mlflow = find(docs, "Deployment", "mlflow")
    if mlflow is None:
        problems.append("the overlay has no Deployment mlflow")
    else:
        image = mlflow["spec"]["template"]["spec"]["containers"][0]["image"]
        if not images.is_role_image(image, images.MLFLOW):
            problems.append(
                f"Deployment mlflow runs {image}, not images.MLFLOW ({images.MLFLOW}) or its digest"
            )

    used: set[tuple[str, str, str]] = set()
    for namespace, _meta, spec in workload_pods(docs):
        used |= {(r.kind, namespace, r.name) for r in pod_refs(spec)}
    runner_namespaces: set[str] = set()
    for run in runs:
        account = run.config.cluster.service_account
        doc = next(
            (d for d in docs if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == account), None
        )
        if doc is None:
            continue
        namespace = doc["metadata"].get("namespace", "default")
        runner_namespaces.add(namespace)
        pods, _ = step_pods(run, namespace)
        for pod in pods.values():
            used |= {(r.kind, namespace, r.name) for r in pod_refs(pod["spec"])}
        used |= {(KINDS[res], namespace, name) for (g, res, _v, name) in RUNNER_NEEDS if name and g == ""}
    for doc in docs:
        key = (doc["kind"], doc["metadata"].get("namespace", "default"), doc["metadata"]["name"])
        if doc["kind"] in ("ConfigMap", "PersistentVolumeClaim", "ServiceAccount") and key not in used:
            problems.append(
                f"{key[0]} {key[1]}/{key[2]} is read by nothing (no workload, compiled step or KFP "
                "call names it)"
            )
    for kind, namespace, name in documented:
        if namespace in runner_namespaces and (kind, namespace, name) not in used:
            problems.append(
                f"manifests/README.md documents {kind} {namespace}/{name}, which nothing references"
            )
    return problems
