"""The cluster contract: every shipped run config, compiled with the project's own compile function, against
the rendered `dev` and `prod` overlays (tests/infra/cluster_contract.py says what is checked).

Everything a compiled run references (service account, Secrets and their keys, ConfigMaps, the model-cache
PVC, the namespace, the MLflow Service in the tracking URI, the images) exists in the overlay or is created
by a command in manifests/README.md; the runner Role grants exactly what the KFP driver / launcher and
Argo's executor call; the overlay creates nothing that nothing reads. Mutated copies prove the check fails
on a tracking host that is no Service, an undocumented Secret, a Role that grants too little or too much
and an unused ConfigMap.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from otdistill import images
from tests.infra import pod_security
from tests.infra.cluster_contract import (
    CONFIGS,
    README,
    RUNNER_NEEDS,
    CompiledRun,
    check_overlay,
    check_run,
    compile_run,
    documented_objects,
    step_pods,
)
from tests.infra.manifest_tools import (
    MANIFESTS,
    OVERLAYS,
    REPO,
    documents,
    kubernetes_validate,
    kustomize_build,
)

LABELS = [str(p.relative_to(REPO / "configs")) for p in CONFIGS]
PAPER = "paper/opt-350m-dialogsum.yaml"
DEPLOYED_HOST = "mlflow.otdistill-mlflow.svc.cluster.local"
PIPELINE_NS = "otdistill-pipelines"


@pytest.fixture(scope="session")
def overlays() -> dict[str, list[dict[str, Any]]]:
    """overlay -> its `kubectl kustomize` output, built once per session."""
    return {overlay: documents(kustomize_build(MANIFESTS / "overlays" / overlay)) for overlay in OVERLAYS}


@pytest.fixture(scope="session")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CompiledRun]:
    """config label -> the config compiled (otdistill.pipelines.submit.compile_pipeline), once per session."""
    workdir = tmp_path_factory.mktemp("compiled")
    return {run.label: run for run in (compile_run(path, workdir) for path in CONFIGS)}


@pytest.fixture(scope="session")
def documented() -> dict[tuple[str, str, str], frozenset[str]]:
    return documented_objects(README.read_text())


def test_every_shipped_config_is_checked() -> None:
    assert len(CONFIGS) >= 11
    assert {"quickstart.yaml", "tiny.yaml", PAPER} <= set(LABELS)
    assert sum(label.startswith("paper/") for label in LABELS) == 9


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("label", LABELS)
def test_config_meets_the_cluster_contract(
    label: str,
    overlay: str,
    compiled: dict[str, CompiledRun],
    overlays: dict[str, list[dict[str, Any]]],
    documented: dict[tuple[str, str, str], frozenset[str]],
) -> None:
    problems = check_run(compiled[label], overlays[overlay], documented)
    assert not problems, f"{label} against overlay {overlay}:\n" + "\n".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_creates_only_what_is_used_and_runs_the_project_images(
    overlay: str,
    compiled: dict[str, CompiledRun],
    overlays: dict[str, list[dict[str, Any]]],
    documented: dict[tuple[str, str, str], frozenset[str]],
) -> None:
    problems = check_overlay(overlays[overlay], compiled.values(), documented)
    assert not problems, f"overlay {overlay}:\n" + "\n".join(problems)


def test_step_pods_validate_strictly(compiled: dict[str, CompiledRun], tmp_path: Path) -> None:
    """The pod of every step of every config, as the KFP driver patches it (env from Secrets / ConfigMap /
    field path, tolerations, node selector, PVC, accelerator limits, deadline), is a valid Kubernetes Pod."""
    unique: dict[str, dict[str, Any]] = {}
    for run in compiled.values():
        pods, problems = step_pods(run, PIPELINE_NS)
        assert not problems, problems
        for pod in pods.values():
            unique.setdefault(json.dumps(pod["spec"], sort_keys=True), pod)
    path = tmp_path / "pods.yaml"
    path.write_text(yaml.safe_dump_all(list(unique.values())))
    result = kubernetes_validate(path)
    assert result.returncode == 0, result.stdout + result.stderr
    gpu_specs = [p["spec"] for p in unique.values() if "tolerations" in p["spec"]]
    assert gpu_specs, "no GPU step carries a toleration"


def test_readme_commands_are_what_the_check_reads(
    documented: dict[tuple[str, str, str], frozenset[str]],
) -> None:
    """The control for the documentation route: the README's commands parse into these objects and keys."""
    assert documented[("Secret", PIPELINE_NS, "hf-token")] == {"token"}
    assert documented[("Secret", PIPELINE_NS, "s3-credentials")] == {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    }
    assert documented[("Secret", PIPELINE_NS, "mlpipeline-minio-artifact")] == {"accesskey", "secretkey"}
    assert ("ConfigMap", PIPELINE_NS, "kfp-launcher") in documented


def test_rbac_yaml_cites_every_call_it_grants() -> None:
    """rbac.yaml and manifests/README.md name the KFP / Argo functions behind each rule."""
    rbac = (MANIFESTS / "base" / "pipeline" / "rbac.yaml").read_text()
    readme = README.read_text()
    for function in (
        "FromConfigMap",
        "getS3BucketCredential",
        "retryIndexFromPodAnnotation",
        "createTaskResult",
    ):
        assert function in rbac and function in readme, function
    assert any("kfp-launcher" in source for source in RUNNER_NEEDS.values())


# --------------------------------------------------------------------------------------------------------
# The check has teeth


BAD_HOSTS = {
    "namespace-without-that-service": "mlflow.mlflow.svc.cluster.local",  # what configs/paper used to say
    "service-that-does-not-exist": "mlflow-server.otdistill-mlflow.svc.cluster.local",
}


@pytest.mark.parametrize("case", sorted(BAD_HOSTS))
def test_a_tracking_host_that_is_no_service_fails_the_contract(
    case: str,
    tmp_path: Path,
    compiled: dict[str, CompiledRun],
    overlays: dict[str, list[dict[str, Any]]],
    documented: dict[tuple[str, str, str], frozenset[str]],
) -> None:
    """Acceptance: configs/paper/opt-350m-dialogsum.yaml with its tracking host changed to a Service that
    does not exist is reported, and nothing else is (the unmutated config passes)."""
    bad = BAD_HOSTS[case]
    text = (REPO / "configs" / PAPER).read_text()
    assert text.count(DEPLOYED_HOST) == 1
    mutated = tmp_path / "opt-350m-dialogsum.yaml"
    mutated.write_text(text.replace(DEPLOYED_HOST, bad))
    run = compile_run(mutated, tmp_path, label="mutated/opt-350m-dialogsum.yaml")
    assert f"http://{bad}:5000" in json.dumps(run.pipeline)  # every step's MLFLOW_TRACKING_URI
    for overlay, docs in overlays.items():
        assert check_run(compiled[PAPER], docs, documented) == [], overlay  # the control
        problems = check_run(run, docs, documented)
        assert len(problems) == 1, (overlay, problems)
        assert f"http://{bad}:5000" in problems[0] and "no Service" in problems[0], (overlay, problems)


def test_an_undocumented_secret_fails_the_contract(
    tmp_path: Path,
    overlays: dict[str, list[dict[str, Any]]],
    documented: dict[tuple[str, str, str], frozenset[str]],
) -> None:
    """The credentials Secret the paper configs used to name, which nothing creates."""
    data = yaml.safe_load((REPO / "configs" / PAPER).read_text())
    data["cluster"]["secrets"].append(
        {"name": "mlflow-credentials", "keys": {"MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME"}}
    )
    mutated = tmp_path / "with-secret.yaml"
    mutated.write_text(yaml.safe_dump(data))
    run = compile_run(mutated, tmp_path, label="mutated/with-secret.yaml")
    problems = check_run(run, overlays["dev"], documented)
    assert len(problems) == 1 and "Secret otdistill-pipelines/mlflow-credentials" in problems[0], problems
    # A documented key set that lacks the referenced key is reported too.
    partial = {**documented, ("Secret", PIPELINE_NS, "mlflow-credentials"): frozenset({"other"})}
    problems = check_run(run, overlays["dev"], partial)
    assert len(problems) == 1 and "MLFLOW_TRACKING_USERNAME" in problems[0], problems


def test_undocumented_kfp_objects_fail_the_contract(
    compiled: dict[str, CompiledRun], overlays: dict[str, list[dict[str, Any]]]
) -> None:
    problems = check_run(compiled[PAPER], overlays["prod"], {})
    named = " ".join(problems)
    assert "kfp-launcher" in named and "mlpipeline-minio-artifact" in named and "hf-token" in named, problems


def _with_role_rules(docs: list[dict[str, Any]], edit: Any) -> list[dict[str, Any]]:
    docs = copy.deepcopy(docs)
    (role,) = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "otdistill-runner"]
    role["rules"] = edit(role["rules"])
    return docs


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda rules: [r for r in rules if r["resources"] != ["secrets"]], "is not granted ('', 'secrets'"),
        (
            lambda rules: [r for r in rules if r["resources"] != ["configmaps"]],
            "is not granted ('', 'configmaps'",
        ),
        (
            lambda rules: [*rules, {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}],
            "is granted ('', 'pods/log', 'get', None)",
        ),
        (
            lambda rules: [*rules, {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
            "is granted ('', 'secrets', 'get', None)",
        ),
    ],
    ids=["no-artifact-secret", "no-kfp-launcher", "extra-pod-logs", "every-secret"],
)
def test_a_role_that_differs_from_what_kfp_calls_fails(
    edit: Any,
    expected: str,
    compiled: dict[str, CompiledRun],
    overlays: dict[str, list[dict[str, Any]]],
    documented: dict[tuple[str, str, str], frozenset[str]],
) -> None:
    problems = check_run(compiled[PAPER], _with_role_rules(overlays["dev"], edit), documented)
    assert any(expected in p for p in problems), problems


def test_an_unused_configmap_fails(
    compiled: dict[str, CompiledRun],
    overlays: dict[str, list[dict[str, Any]]],
    documented: dict[tuple[str, str, str], frozenset[str]],
) -> None:
    """The GPU scheduling ConfigMap the gpu-nodepool component used to publish, which no pod read."""
    docs = [
        *overlays["dev"],
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "otdistill-gpu-scheduling", "namespace": PIPELINE_NS},
            "data": {"gpu_resource": "nvidia.com/gpu"},
        },
    ]
    problems = check_overlay(docs, compiled.values(), documented)
    assert problems == [
        f"ConfigMap {PIPELINE_NS}/otdistill-gpu-scheduling is read by nothing (no workload, compiled step or "
        "KFP call names it)"
    ]


# --------------------------------------------------------------------------------------------------------
# Pod Security and NetworkPolicies: a step pod that would be refused or cut off fails the contract


def test_step_pods_run_as_the_image_user_under_restricted(compiled: dict[str, CompiledRun]) -> None:
    """The kfp-kubernetes securityContext (uid/gid 10001, runAsNonRoot) plus KFP's own hardening makes every
    step pod admissible under Pod Security `restricted`."""
    pods, _ = step_pods(compiled[PAPER], PIPELINE_NS)
    for step, pod in pods.items():
        context = pod["spec"]["containers"][0]["securityContext"]
        assert (context["runAsUser"], context["runAsGroup"]) == (images.IMAGE_UID, images.IMAGE_UID), step
        assert context["runAsNonRoot"] is True and context["capabilities"] == {"drop": ["ALL"]}, step
        assert pod_security.violations(pod["spec"], "restricted") == [], step


def test_a_step_pod_that_restricted_refuses_fails_the_contract(
    compiled: dict[str, CompiledRun],
    overlays: dict[str, list[dict[str, Any]]],
    documented: dict[tuple[str, str, str], frozenset[str]],
) -> None:
    """Without the securityContext (as before this check) every step is refused; a namespace that does not
    enforce `restricted` is reported too."""
    run = copy.deepcopy(compiled[PAPER])
    for executor in run.k8s.values():
        del executor["securityContext"]
    problems = check_run(run, overlays["dev"], documented)
    refused = [p for p in problems if "refused by Pod Security restricted" in p]
    assert len(refused) == len(run.executors) and all("runAsNonRoot" in p for p in refused), problems
    assert len(refused) == len(problems), problems

    docs = copy.deepcopy(overlays["dev"])
    (namespace,) = [d for d in docs if d["kind"] == "Namespace" and d["metadata"]["name"] == PIPELINE_NS]
    namespace["metadata"]["labels"][pod_security.ENFORCE_LABEL] = "baseline"
    problems = check_run(compiled[PAPER], docs, documented)
    assert problems == [
        f"namespace {PIPELINE_NS} enforces Pod Security 'baseline', not 'restricted' "
        f"({pod_security.ENFORCE_LABEL})"
    ]


def _without_policy(docs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    kept = [d for d in docs if not (d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == name)]
    assert len(kept) == len(docs) - 1, name
    return kept


NETWORK_MUTATIONS = {
    "pipelines-to-dns": "the steps cannot reach DNS (kube-dns)",
    "pipelines-to-mlflow": "is unreachable from the steps: the egress policies of otdistill-pipelines",
    "mlflow-from-pipelines": "is unreachable from the steps: the ingress policies of otdistill-mlflow",
    "pipelines-to-kfp": "to kubeflow pods",  # ml-pipeline, metadata-grpc-server, seaweedfs
    "pipelines-to-kube-apiserver": "names the Kubernetes API server's address",
    "pipelines-https-egress": "the config needs the Hugging Face hub over HTTPS",
}


@pytest.mark.parametrize("policy", sorted(NETWORK_MUTATIONS))
def test_a_missing_network_allow_fails_the_contract(
    policy: str,
    compiled: dict[str, CompiledRun],
    overlays: dict[str, list[dict[str, Any]]],
    documented: dict[tuple[str, str, str], frozenset[str]],
) -> None:
    docs = _without_policy(overlays["prod"], policy)
    problems = check_run(compiled[PAPER], docs, documented)
    assert problems and all(NETWORK_MUTATIONS[policy] in p for p in problems), problems
    if policy == "pipelines-https-egress":  # optional: a config with PyPI models and local data needs none
        assert check_run(compiled["quickstart.yaml"], docs, documented) == []


def test_an_unset_apiserver_address_fails_the_contract(
    compiled: dict[str, CompiledRun], documented: dict[tuple[str, str, str], frozenset[str]]
) -> None:
    """The base alone still holds the placeholder address that each overlay replaces."""
    docs = documents(kustomize_build(MANIFESTS / "base"))
    problems = check_run(compiled["quickstart.yaml"], docs, documented)
    assert any("still holds the placeholder 192.0.2.1/32" in p for p in problems), problems


def _overlay_with(tmp_path: Path, overlay: str, component: str) -> list[dict[str, Any]]:
    """`overlay` plus one optional component, as a user's own overlay would add it."""
    directory = tmp_path / f"{overlay}-{component}"
    directory.mkdir()
    (directory / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                # kustomize takes only relative roots
                "resources": [os.path.relpath(MANIFESTS / "overlays" / overlay, directory)],
                "components": [os.path.relpath(MANIFESTS / "components" / component, directory)],
            }
        )
    )
    return documents(kustomize_build(directory))


def test_s3_data_on_the_in_cluster_minio_needs_the_access_component(
    tmp_path: Path,
    overlays: dict[str, list[dict[str, Any]]],
    documented: dict[tuple[str, str, str], frozenset[str]],
) -> None:
    """MinIO admits only the tracking server; a config reading s3:// data from it is reported until
    components/minio-pipelines-access opens it to the pipeline namespace."""
    data = yaml.safe_load((REPO / "configs" / PAPER).read_text())
    data["data"]["source"] = "s3://otdistill-data/dialogsum"
    data["data"]["s3_endpoint_url"] = "http://minio.otdistill-mlflow.svc.cluster.local:9000"
    mutated = tmp_path / "minio-data.yaml"
    mutated.write_text(yaml.safe_dump(data))
    run = compile_run(mutated, tmp_path, label="mutated/minio-data.yaml")
    problems = check_run(run, overlays["dev"], documented)
    assert len(problems) == 1 and "S3 endpoint http://minio.otdistill-mlflow" in problems[0], problems
    assert "egress policies of otdistill-pipelines" in problems[0], problems
    assert check_run(run, _overlay_with(tmp_path, "dev", "minio-pipelines-access"), documented) == []


# --------------------------------------------------------------------------------------------------------
# Images pinned by digest

DIGEST = "sha256:" + "0123456789abcdef" * 4


def test_a_digest_pinned_image_meets_the_contract_and_a_malformed_one_does_not_compile(
    tmp_path: Path,
    overlays: dict[str, list[dict[str, Any]]],
    documented: dict[tuple[str, str, str], frozenset[str]],
) -> None:
    data = yaml.safe_load((REPO / "configs" / PAPER).read_text())
    data["cluster"]["image"] = f"{images.repository(images.CPU)}@{DIGEST}"
    data["cluster"]["gpu_image"] = f"{images.repository(images.CUDA)}@{DIGEST}"
    pinned = tmp_path / "pinned.yaml"
    pinned.write_text(yaml.safe_dump(data))
    run = compile_run(pinned, tmp_path, label="mutated/pinned.yaml")
    assert f"otdistill-cuda@{DIGEST}" in json.dumps(run.pipeline)
    assert check_run(run, overlays["prod"], documented) == []

    data["cluster"]["image"] = f"{images.repository(images.CPU)}@sha256:abc"
    bad = tmp_path / "bad-digest.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(images.ImageReferenceError, match=r"cluster\.image: .*sha256:abc"):
        compile_run(bad, tmp_path, label="mutated/bad-digest.yaml")


def test_the_digest_variable_pins_a_role() -> None:
    """OTDISTILL_IMAGE_DIGEST_<ROLE> turns that role's name into `<repository>@sha256:...`; a malformed
    value is refused naming the variable; --tags still prints what the build tags."""

    def names(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "otdistill.images", *args],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    pinned = names({"OTDISTILL_IMAGE_DIGEST_CPU": DIGEST}, "cpu")
    assert pinned.stdout.strip() == f"{images.repository(images.TAGGED['cpu'])}@{DIGEST}", pinned.stderr
    assert (
        names({"OTDISTILL_IMAGE_DIGEST_CPU": DIGEST}, "--tags", "cpu").stdout.strip() == images.TAGGED["cpu"]
    )
    bad = names({"OTDISTILL_IMAGE_DIGEST_MLFLOW": "sha256:ABC"}, "mlflow")
    assert bad.returncode != 0 and "OTDISTILL_IMAGE_DIGEST_MLFLOW='sha256:ABC'" in bad.stderr, bad.stderr


@pytest.mark.parametrize(("digest", "ok"), [(DIGEST, True), ("sha256:0123", False)])
def test_an_overlay_pinned_by_digest_is_checked(
    digest: str,
    ok: bool,
    tmp_path: Path,
    compiled: dict[str, CompiledRun],
    documented: dict[tuple[str, str, str], frozenset[str]],
) -> None:
    """kustomize `images:` with `digest:` renders `name@sha256:...`: a well-formed digest of the MLflow
    repository passes, a malformed one is reported."""
    copy_dir = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, copy_dir)
    kustomization = copy_dir / "overlays" / "prod" / "kustomization.yaml"
    text = kustomization.read_text()
    assert text.count("    newTag: 0.1.0\n") == 1
    kustomization.write_text(text.replace("    newTag: 0.1.0\n", f"    digest: {digest}\n"))
    docs = documents(kustomize_build(copy_dir / "overlays" / "prod"))
    (server,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "mlflow"]
    assert server["spec"]["template"]["spec"]["containers"][0]["image"].endswith(f"@{digest}")
    problems = check_overlay(docs, compiled.values(), documented)
    if ok:
        assert problems == []
    else:
        assert problems and all("sha256:0123" in p for p in problems), problems


def test_a_config_without_the_pipeline_login_fails_the_contract(
    tmp_path: Path,
    overlays: dict[str, list[dict[str, Any]]],
    documented: dict[tuple[str, str, str], frozenset[str]],
) -> None:
    """The MLflow server runs basic-auth: a config whose steps get no login would be answered 401."""
    data = yaml.safe_load((REPO / "configs" / PAPER).read_text())
    data["cluster"]["secrets"] = [
        s for s in data["cluster"]["secrets"] if s["name"] != "mlflow-pipeline-credentials"
    ]
    mutated = tmp_path / "no-login.yaml"
    mutated.write_text(yaml.safe_dump(data))
    run = compile_run(mutated, tmp_path, label="mutated/no-login.yaml")
    problems = check_run(run, overlays["dev"], documented)
    assert problems and all("MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD" in p for p in problems)
    assert len(problems) == len(run.executors), problems  # one per step
