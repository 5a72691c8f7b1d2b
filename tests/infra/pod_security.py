"""Pod Security Standards, checked offline: what the admission controller of a namespace labelled
`pod-security.kubernetes.io/enforce: restricted` (or `baseline`) would refuse in a pod spec.

The rules are Kubernetes' (https://kubernetes.io/docs/concepts/security/pod-security-standards/, the
checks of k8s.io/pod-security-admission/policy): baseline forbids privileged containers, host namespaces,
hostPath volumes, host ports and added capabilities beyond the default set; restricted also requires
runAsNonRoot (pod or every container) and no runAsUser 0, allowPrivilegeEscalation false, capabilities
dropping ALL (adding at most NET_BIND_SERVICE), a RuntimeDefault or Localhost seccomp profile and only the
volume types it lists.
"""

from __future__ import annotations

from typing import Any

ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"
LEVELS = ("privileged", "baseline", "restricted")
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
}
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def enforced_level(namespace_doc: dict[str, Any] | None) -> str:
    """The level a namespace enforces (`privileged`, the default, when unlabelled)."""
    labels = ((namespace_doc or {}).get("metadata") or {}).get("labels") or {}
    return str(labels.get(ENFORCE_LABEL, "privileged"))


def violations(spec: dict[str, Any], level: str) -> list[str]:
    """What admission at `level` would refuse in pod `spec` ([] when it is admitted)."""
    if level not in LEVELS:
        return [f"unknown Pod Security level {level!r}"]
    if level == "privileged":
        return []
    problems: list[str] = []
    containers = [*spec.get("initContainers", []), *spec.get("containers", [])]
    pod_context = spec.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            problems.append(f"{key}: true")
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if "hostPath" in kinds:
            problems.append(f"volume {volume['name']} is a hostPath")
        elif level == "restricted" and not kinds <= RESTRICTED_VOLUMES:
            problems.append(f"volume {volume['name']} has a type restricted does not allow: {sorted(kinds)}")
    for container in containers:
        name = container.get("name", "?")
        context = container.get("securityContext") or {}
        if context.get("privileged"):
            problems.append(f"container {name} is privileged")
        if any(p.get("hostPort") for p in container.get("ports", [])):
            problems.append(f"container {name} uses a hostPort")
        added = set((context.get("capabilities") or {}).get("add") or [])
        allowed = {"NET_BIND_SERVICE"} if level == "restricted" else BASELINE_CAPABILITIES
        if added - allowed:
            problems.append(f"container {name} adds capabilities {sorted(added - allowed)}")
        if level != "restricted":
            continue
        non_root = context.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
        if non_root is not True:
            problems.append(f"container {name} does not set runAsNonRoot: true (nor does the pod)")
        if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
            problems.append(f"container {name} runs as uid 0")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"container {name} does not set allowPrivilegeEscalation: false")
        if "ALL" not in ((context.get("capabilities") or {}).get("drop") or []):
            problems.append(f"container {name} does not drop ALL capabilities")
        seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"container {name} has no RuntimeDefault / Localhost seccomp profile")
    return problems
