"""The CUDA image cannot be built here (no CUDA torch build on this machine, no GPU): its Dockerfile is
linted with the others (tests/infra/test_docker.py), and its dependency set is resolved here against the
package index with the Dockerfile's own torch source: the project's dependencies at the constraints.txt
pins, with PyPI's torch 2.13.0 for Linux x86_64, which is the CUDA build."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from tests.infra.test_docker import DOCKERFILES, instructions

ROOT = Path(__file__).resolve().parents[2]


def test_cuda_image_dependency_set_resolves_to_the_cuda_torch(tmp_path: Path) -> None:
    args = dict(a.split("=", 1) for a in instructions(DOCKERFILES["cuda"], "ARG") if "=" in a)
    torch_source = shlex.split(args["TORCH_PIP_ARGS"].strip('"'))
    report = tmp_path / "report.json"
    # None of this machine's pip settings: its local wheel folders (PIP_FIND_LINKS) hold the CPU torch build.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--disable-pip-version-check", "--cert", "/etc/ssl/certs/ca-certificates.crt",
         *torch_source, "--report", str(report),
         "-c", str(ROOT / "constraints.txt"), "-r", str(ROOT / "requirements.txt")],
        capture_output=True, text=True, timeout=900, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    installed = {
        item["metadata"]["name"].lower(): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    assert installed["torch"] == "2.13.0"  # no local "+cpu" label: PyPI's Linux wheel
    cuda = sorted(name for name in installed if name.startswith("nvidia-"))
    assert cuda, f"no CUDA runtime wheels in the resolved set: {sorted(installed)}"
    print(f"CUDA image: {len(installed)} distributions resolve, CUDA wheels: {', '.join(cuda)}")
