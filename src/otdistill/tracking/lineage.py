"""Lineage tags: what a run (and so a registered student) was made from.

Every run records the data hash, the teacher and student ids with their exact revisions, the loss, the code
version and the container image, so a model in the registry can be traced back and reproduced. The code
version and image come from the environment the image was built with (``OTDISTILL_GIT_SHA``,
``OTDISTILL_CONTAINER_IMAGE``, set by docker/Dockerfile.*), else from git, else the package version.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from otdistill import __version__
from otdistill.tracking.runs import TrackedRun

LINEAGE_PREFIX = "otdistill.lineage."
GIT_SHA = re.compile(r"^[0-9a-f]{40}$")
# The MLflow UI shows this standard tag as the run's source commit.
MLFLOW_GIT_COMMIT_TAG = "mlflow.source.git.commit"


def code_version() -> str:
    """Git sha of the code: env ``OTDISTILL_GIT_SHA``, else ``git rev-parse HEAD``, else the version."""
    env_sha = os.environ.get("OTDISTILL_GIT_SHA", "").strip()
    if env_sha:
        return env_sha
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        out = None
    if out is not None and out.returncode == 0 and GIT_SHA.match(out.stdout.strip()):
        return out.stdout.strip()
    return f"otdistill=={__version__}"


def container_image() -> str:
    """Image the step runs in (env ``OTDISTILL_CONTAINER_IMAGE``), or ``local`` outside a container."""
    return os.environ.get("OTDISTILL_CONTAINER_IMAGE", "").strip() or "local"


@dataclass(frozen=True)
class Lineage:
    """Provenance of one distillation run; all fields become run tags ``otdistill.lineage.<field>``."""

    data_hash: str
    teacher_id: str
    teacher_revision: str
    student_id: str
    student_revision: str
    loss: str
    code_version: str = field(default_factory=code_version)
    container_image: str = field(default_factory=container_image)

    def __post_init__(self) -> None:
        empty = [k for k, v in asdict(self).items() if not str(v).strip()]
        if empty:
            raise ValueError(f"lineage fields must not be empty: {', '.join(empty)}")

    def as_tags(self) -> dict[str, str]:
        tags = {f"{LINEAGE_PREFIX}{k}": str(v) for k, v in asdict(self).items()}
        if GIT_SHA.match(self.code_version):
            tags[MLFLOW_GIT_COMMIT_TAG] = self.code_version
        return tags


def log_lineage(run: TrackedRun, lineage: Lineage) -> None:
    """Tag `run` with `lineage` (call it on the parent run and on the steps that produce models)."""
    run.set_tags(lineage.as_tags())


def read_lineage(run: TrackedRun) -> dict[str, str]:
    """The lineage tags recorded on `run`, keyed by field name."""
    tags = run.client.get_run(run.run_id).data.tags
    return {k.removeprefix(LINEAGE_PREFIX): v for k, v in tags.items() if k.startswith(LINEAGE_PREFIX)}
