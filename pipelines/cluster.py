"""Apply a RunConfig's `cluster` section to one pipeline task with kfp / kfp-kubernetes.

GPU steps get accelerators, node selector, tolerations, retries with backoff; every step gets its
resources, a timeout (active_deadline_seconds), the credential secrets as environment, the MLflow server's
URI (the config's `tracking.tracking_uri`, else the tracking ConfigMap's), the model-cache PVC and the
pipeline run id as an environment variable (from the pod's `pipeline/runid` label: steps find their MLflow
parent run by it without taking it as an input, which would defeat step caching). Every object named here
must exist in the namespace the run uses: tests/infra/test_cluster_contract.py checks the shipped configs
against manifests/."""

from __future__ import annotations

from typing import Any

from kfp import kubernetes

from otdistill import images
from otdistill.config import RESOURCES_OF, ClusterConfig, Resources
from otdistill.steps.runtime import CACHE_ENV, IMAGE_ENV, RUN_ID_ENV

RUN_ID_LABEL = "metadata.labels['pipeline/runid']"
# The key of `cluster.tracking_config_map` a step reads (otdistill.tracking.TrackingConfig falls back to it).
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
SHM_VOLUME = "dshm"


def _resources(task: Any, res: Resources) -> None:
    if res.cpu_request:
        task.set_cpu_request(res.cpu_request)
    if res.cpu_limit:
        task.set_cpu_limit(res.cpu_limit)
    if res.memory_request:
        task.set_memory_request(res.memory_request)
    if res.memory_limit:
        task.set_memory_limit(res.memory_limit)


def apply_cluster_settings(task: Any, step: str, cluster: ClusterConfig, tracking_uri: str = "") -> Any:
    """Configure `task` (the pipeline's `step`) for the cluster described by `cluster`; returns it.

    tracking_uri: the config's `tracking.tracking_uri`; set, it is the step's `MLFLOW_TRACKING_URI`
    (instead of the ConfigMap's). Environment, not an input: the server does not enter cache keys.
    """
    gpu = RESOURCES_OF.get(step, step) in cluster.gpu_steps and cluster.gpus > 0
    image = cluster.gpu_image if gpu else cluster.image
    images.check_reference(image, "cluster.gpu_image" if gpu else "cluster.image")
    task.set_container_image(image)
    # Non-root as the images' user. KFP's compiler adds allowPrivilegeEscalation: false, drop ALL
    # capabilities and seccomp RuntimeDefault to every step container (kubeflow/pipelines 2.17.0 backend/src/
    # v2/compiler/argocompiler/security_context.go applySecurityContextToExecutorTemplate); kfp-kubernetes
    # offers only these identity fields, and no read-only root filesystem (manifests/README.md, "Pods").
    kubernetes.set_security_context(
        task, run_as_user=images.IMAGE_UID, run_as_group=images.IMAGE_UID, run_as_non_root=True
    )
    task.set_env_variable(IMAGE_ENV, image)  # recorded as lineage by the steps
    if cluster.image_pull_policy:
        kubernetes.set_image_pull_policy(task, cluster.image_pull_policy)
    if cluster.image_pull_secrets:
        kubernetes.set_image_pull_secrets(task, list(cluster.image_pull_secrets))
    if gpu:
        task.set_accelerator_type(cluster.accelerator)
        task.set_accelerator_limit(cluster.gpus)
        _resources(task, cluster.gpu_resources)
        for key, value in cluster.gpu_node_selector.items():
            kubernetes.add_node_selector(task, label_key=key, label_value=value)
        for tol in cluster.gpu_tolerations:
            kubernetes.add_toleration(
                task, key=tol.key, operator=tol.operator, value=tol.value, effect=tol.effect
            )
        if cluster.retry.num_retries > 0:
            task.set_retry(
                num_retries=cluster.retry.num_retries,
                backoff_duration=cluster.retry.backoff_duration,
                backoff_factor=cluster.retry.backoff_factor,
                backoff_max_duration=cluster.retry.backoff_max_duration,
            )
        if cluster.gpus > 1:
            # NCCL between the step's GPU processes goes through /dev/shm; a pod's default is 64 MiB.
            kubernetes.empty_dir_mount(task, volume_name=SHM_VOLUME, mount_path="/dev/shm", medium="Memory")
    else:
        _resources(task, cluster.cpu_resources)
    timeout = cluster.timeouts.get(step, cluster.default_timeout)
    if timeout > 0:
        kubernetes.set_timeout(task, timeout)
    for secret in cluster.secrets:
        kubernetes.use_secret_as_env(
            task, secret_name=secret.name, secret_key_to_env=dict(secret.keys), optional=secret.optional
        )
    if tracking_uri:
        task.set_env_variable(TRACKING_URI_ENV, tracking_uri)
    elif cluster.tracking_config_map:
        kubernetes.use_config_map_as_env(
            task,
            config_map_name=cluster.tracking_config_map,
            config_map_key_to_env={TRACKING_URI_ENV: TRACKING_URI_ENV},
        )
    if cluster.model_cache_pvc:
        kubernetes.mount_pvc(task, pvc_name=cluster.model_cache_pvc, mount_path=cluster.model_cache_path)
        root = cluster.model_cache_path.rstrip("/")
        task.set_env_variable(CACHE_ENV, f"{root}/otdistill")  # as in the images (docker/README.md)
        task.set_env_variable("HF_HOME", f"{root}/huggingface")
    kubernetes.use_field_path_as_env(task, env_name=RUN_ID_ENV, field_path=RUN_ID_LABEL)
    return task
