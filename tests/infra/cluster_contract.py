"""The cluster contract between the compiled pipeline of a run config and a rendered overlay of manifests/.

A compiled pipeline names Kubernetes objects: the service account its pods run as, Secrets and ConfigMaps
(and their keys) it maps into the environment, the model-cache PVC, the images, the MLflow Service in the
tracking URI. Each must exist in the overlay, in the namespace the run uses, or be one the user creates with a
`kubectl create ...` command that manifests/README.md shows. The run's service account must be granted
exactly what Kubeflow Pipelines' driver and launcher and Argo's executor call (RUNNER_NEEDS, with the
source of each call), and every ConfigMap, PVC and ServiceAccount of the overlay must be used by something.

`check_run` and `check_overlay` return human-readable violations (empty: the contract holds); the tests
assert on them, and a mutated config shows that a wrong tracking host is reported.
"""

from __future__ import annotations

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
from tests.infra.manifest_tools import MANIFESTS, REPO

CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))
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
    "tolerations",
}


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
    from otdistill.pipelines.submit import compile_pipeline

    cfg = RunConfig.from_yaml(path)
    label = label or str(path.relative_to(REPO / "configs"))
    output = workdir / (label.replace("/", "__") + ".pipeline.yaml")
    # On a fresh, shallow stack: kfp's PipelineTask._ensure_container_spec_exists calls inspect.stack() for
    # every task setting, which under pytest's deep stack costs ~0.4 s each (~30 s per config) and ~1 s in
    # all from a worker thread. One compile at a time (kfp's pipeline context is global).
    with ThreadPoolExecutor(max_workers=1) as worker:
        out = worker.submit(compile_pipeline, cfg, output).result()
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
        container: dict[str, Any] = {"name": "main", "image": container_spec["image"], "env": env}
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
        spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
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


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if selector.get("matchExpressions"):
        raise AssertionError(f"matchExpressions are not handled by the contract check: {selector}")
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def _admits(policy: dict[str, Any], from_labels: dict[str, str], port: int, port_name: str | None) -> bool:
    for rule in policy["spec"].get("ingress", []):
        ports = rule.get("ports") or []
        if ports and not any(
            p.get("port") in (port, port_name) and p.get("protocol", "TCP") == "TCP" for p in ports
        ):
            continue
        peers = rule.get("from") or []
        if not peers:
            return True
        for peer in peers:
            if "ipBlock" in peer or "namespaceSelector" not in peer:
                continue  # same-namespace pods or IP ranges: not the pipeline namespace's pods
            if _matches(peer["namespaceSelector"], from_labels) and _matches(peer.get("podSelector", {}), {}):
                return True
    return False


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
    target = service_of(parts.hostname, pipeline_namespace)
    if target is None:
        return [f"tracking URI {uri} ({where}): host {parts.hostname} is not a Service of the overlay"]
    name, namespace = target
    service = find(docs, "Service", name, namespace)
    if service is None:
        services = sorted(
            f"{d['metadata'].get('namespace')}/{d['metadata']['name']}"
            for d in docs
            if d["kind"] == "Service"
        )
        return [
            f"tracking URI {uri} ({where}): no Service {name} in namespace {namespace} "
            f"(the overlay's Services: {', '.join(services)})"
        ]
    port = parts.port or (443 if parts.scheme == "https" else 80)
    service_ports = [p for p in service["spec"].get("ports", []) if p["port"] == port]
    if not service_ports:
        return [f"tracking URI {uri} ({where}): Service {namespace}/{name} has no port {port}"]
    target_port = service_ports[0].get("targetPort", port)
    backends = [
        (meta, spec)
        for ns, meta, spec in workload_pods(docs)
        if ns == namespace
        and _matches({"matchLabels": service["spec"].get("selector", {})}, meta.get("labels", {}))
    ]
    if not backends:
        return [
            f"tracking URI {uri} ({where}): Service {namespace}/{name} selects no workload of the overlay"
        ]
    meta, spec = backends[0]
    numbers = {(p.get("name"), p["containerPort"]) for c in spec["containers"] for p in c.get("ports", [])}
    port_name, port_number = next(((n, p) for n, p in numbers if target_port in (n, p)), (None, target_port))
    if not isinstance(port_number, int):
        return [
            f"tracking URI {uri} ({where}): targetPort {target_port} of {namespace}/{name} "
            "is no container port"
        ]
    from_ns = find(docs, "Namespace", pipeline_namespace)
    from_labels = {
        **((from_ns or {}).get("metadata", {}).get("labels") or {}),
        "kubernetes.io/metadata.name": pipeline_namespace,  # set by the API server on every namespace
    }
    policies = [
        p
        for p in docs
        if p["kind"] == "NetworkPolicy"
        and p["metadata"].get("namespace") == namespace
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
        and _matches(p["spec"].get("podSelector", {}), meta.get("labels", {}))
    ]
    if policies and not any(_admits(p, from_labels, port_number, port_name) for p in policies):
        return [
            f"tracking URI {uri} ({where}): the NetworkPolicies of {namespace} "
            f"({', '.join(p['metadata']['name'] for p in policies)}) admit no traffic from namespace "
            f"{pipeline_namespace} to port {port_number} of Service {name}'s pods"
        ]
    return []


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

    # The pods the steps run in: referenced objects, images.
    pods, pod_problems = step_pods(run, namespace)
    problems += pod_problems
    seen: dict[Ref, list[str]] = {}
    for step, pod in pods.items():
        for ref in pod_refs(pod["spec"]):
            seen.setdefault(ref, []).append(step)
        container = pod["spec"]["containers"][0]
        image = container["image"]
        gpu = any(k not in ("cpu", "memory") for k in container.get("resources", {}).get("limits", {}))
        expected = images.CUDA if gpu else images.CPU
        if image != expected:
            problems.append(
                f"{run.label}: {step} runs {image}, not {'images.CUDA' if gpu else 'images.CPU'} "
                f"({expected}) of otdistill.images"
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
    for source in {(s["name"], s["key"]) for s in env_sources}:
        cm = find(docs, "ConfigMap", source[0], namespace)
        value = (cm or {}).get("data", {}).get(source[1])
        if value:
            where = f"ConfigMap {namespace}/{source[0]}"
            problems += [f"{run.label}: {p}" for p in check_tracking_uri(value, where, namespace, docs)]
        elif cm is not None:
            problems.append(f"{run.label}: ConfigMap {namespace}/{source[0]} has no value for {source[1]}")
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
    for namespace, _meta, spec in workload_pods(docs):
        for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
            image = container["image"]
            if image.startswith(registry) and image not in images.IMAGES.values():
                problems.append(f"{namespace}: image {image} is not one of otdistill.images {images.IMAGES}")
    mlflow = find(docs, "Deployment", "mlflow")
    if mlflow is None:
        problems.append("the overlay has no Deployment mlflow")
    else:
        image = mlflow["spec"]["template"]["spec"]["containers"][0]["image"]
        if image != images.MLFLOW:
            problems.append(f"Deployment mlflow runs {image}, not images.MLFLOW ({images.MLFLOW})")

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
