"""Run the local pipeline's steps in containers: kfp.local's DockerRunner on the project's CPU image.

`otdistill run --runner docker` executes every step in the image the compiled pipeline names
(`otdistill.images.CPU`, built by `docker/build-images.sh`), as a cluster would, but on this machine:

- host networking (`network_mode="host"`): a step reaches an `mlflow server` (and its S3 artifact store)
  or PostgreSQL on the host's 127.0.0.1 exactly as `tracking.tracking_uri` says;
- the run directory, this machine's model cache (`OTDISTILL_CACHE`, else ~/.cache/otdistill: converted
  models are shared with subprocess runs), and every local path the config reads (data, model sources)
  are bind-mounted at the same path, so paths in the config and in KFP's artifact URIs mean the same inside
  and outside (sources read-only);
- steps run as the calling user's uid:gid, so what they write under the run directory stays the user's
  (the image's own user, uid 10001, is what a cluster pod runs as; a bind mount is owned by the host user);
- the pipeline run id and the offline / telemetry switches travel as environment (on a cluster the run id
  comes from the pod's `pipeline/runid` label, see `cluster.py`);
- a step's exit status is read before its container is removed (`run_docker_container`): kfp 2.17's own
  runner starts containers with `auto_remove`, and when one is gone before its status is read (a step
  that fails fast, or is killed: out of memory) it reports SUCCESS, with no outputs
  (kubeflow/pipelines#13332, open; fixes #13381, #13402, #13907 not merged).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from otdistill.config import RunConfig
from otdistill.models.cache import default_cache_dir
from otdistill.run_console import STEP_ENV
from otdistill.steps.common import CACHE_ENV, RUN_ID_ENV

# Host settings a step must see as the host process does (offline hub, MLflow client behaviour, and the
# run console's STEP_ENV: progress events, unbuffered output).
PASSTHROUGH_ENV_PREFIXES = (
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "MLFLOW_",
    "TOKENIZERS_PARALLELISM",
    *STEP_ENV,
)


def existing_local_path(source: str) -> Path | None:
    """The resolved local file or directory a data/model source names, or None (a URI, pypi:, a hub id)."""
    if not source or "://" in source or source.startswith("pypi:"):
        return None
    path = Path(source).expanduser()
    return path.resolve() if path.exists() else None


def local_paths(cfg: RunConfig) -> list[Path]:
    """The existing local files and directories the config reads (bind-mounted read-only)."""
    found = (existing_local_path(s) for s in (cfg.data.source, cfg.teacher.source, cfg.student.source))
    return [p for p in found if p is not None]


def outermost(paths: list[Path]) -> list[Path]:
    """`paths` without those inside another one (a mount of the outer one already shows them; docker
    refuses two mounts on one target)."""
    kept: list[Path] = []
    for p in sorted(set(paths), key=lambda p: len(p.parts)):
        if not any(p.is_relative_to(k) for k in kept):
            kept.append(p)
    return kept


def step_environment(pipeline_run_id: str, cache_dir: Path) -> dict[str, str]:
    """Environment of every step container."""
    env = {
        RUN_ID_ENV: pipeline_run_id,
        CACHE_ENV: str(cache_dir),
        "HF_HOME": str(cache_dir / "huggingface"),
        # The calling user's uid has no home in the image: caches that default to ~ go to /tmp.
        "HOME": "/tmp",
    }
    for name, value in os.environ.items():
        if name.startswith(PASSTHROUGH_ENV_PREFIXES):
            env[name] = value
    return env


def run_docker_container(
    client: Any, image: str, command: Sequence[str], volumes: dict[str, Any], **container_run_args: Any
) -> int:
    """Run one step's container to its end, streaming its output; its exit status (137 when it was killed).

    kfp.local's `docker_task_handler.run_docker_container` with the container kept until `wait` has read
    its status, then removed (see the module docstring). `docker_runner` installs it in kfp.local.
    """
    from docker.errors import NotFound
    from kfp.local import docker_task_handler

    image = docker_task_handler.add_latest_tag_if_not_present(image=image)
    if not any(image in (i.tags + i.attrs["RepoDigests"]) for i in client.images.list()):
        print(f"Pulling image {image!r}")
        client.images.pull(image)
    container = client.containers.run(
        image=image,
        command=list(command),
        detach=True,
        stdout=True,
        stderr=True,
        volumes=volumes,
        **container_run_args,
    )
    try:
        for line in container.logs(stream=True):
            print(line.decode(), end="")
        return int(container.wait()["StatusCode"])
    finally:
        with contextlib.suppress(NotFound):  # removed already (by the daemon's cleanup, or by hand)
            container.remove(force=True)


def docker_runner(cfg: RunConfig, run_dir: Path, pipeline_run_id: str) -> Any:
    """A `kfp.local.DockerRunner` for `cfg`'s run in `run_dir` (see the module docstring)."""
    from docker.types import Mount
    from kfp import local
    from kfp.local import docker_task_handler

    docker_task_handler.run_docker_container = run_docker_container  # reads the status before removal

    cache_dir = default_cache_dir().resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    writable = outermost([run_dir.resolve(), cache_dir])
    mounts = [Mount(target=str(p), source=str(p), type="bind") for p in writable]
    mounts += [
        Mount(target=str(p), source=str(p), type="bind", read_only=True)
        for p in outermost(local_paths(cfg))
        if not any(p.is_relative_to(w) for w in writable)
    ]
    return local.DockerRunner(
        network_mode="host",
        user=f"{os.getuid()}:{os.getgid()}",
        mounts=mounts,
        environment=step_environment(pipeline_run_id, cache_dir),
    )
