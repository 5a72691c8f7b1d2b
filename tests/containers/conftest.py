"""The container stage: a Docker engine, the images `docker/build-images.sh` built (`make images`), and the
server stack as the manifests deploy it, with `mlflow server` running in the project's MLflow image.

Every test here is marked `containers` (and `servers`: it starts real PostgreSQL / S3 / MLflow processes).
The engine is used when one answers; otherwise dockerd is started for the session and stopped after it
(its pid goes to .ci/run's server list). A missing image is a failure that says to run `make images`,
never a skip: this stage is what proves the production path runs.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from otdistill import images
from tests.servers.processes import ManagedProcess, ServerStack, running_stack


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.containers)
            item.add_marker(pytest.mark.servers)


def docker(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`docker ARGS...` with captured text output; raises with the output on failure when `check`."""
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def _engine_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False).returncode == 0


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    if _engine_answers():
        yield
        return
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    if not Path(dockerd).exists():
        pytest.fail("no Docker engine: run scripts/install-test-servers.sh (or `make test`)")
    engine = ManagedProcess(
        name="dockerd",
        argv=[dockerd],
        log_path=tmp_path_factory.mktemp("dockerd") / "dockerd.log",
        ready=_engine_answers,
        start_timeout_s=60.0,
    )
    atexit.register(engine.stop)
    engine.start()
    try:
        yield
    finally:
        engine.stop(timeout_s=30.0)
        atexit.unregister(engine.stop)


@pytest.fixture(scope="session")
def built_images(docker_engine: None) -> dict[str, str]:
    """The images this machine built (`make images`), by role; the CUDA image is not built here."""
    built = {role: ref for role, ref in images.IMAGES.items() if role != "cuda"}
    for ref in built.values():
        if docker("image", "inspect", ref, check=False).returncode != 0:
            pytest.fail(f"image {ref} is not built: run `make images` (docker/build-images.sh)")
    return built


@pytest.fixture(scope="session")
def container_stack(
    built_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerStack]:
    """PostgreSQL and S3 on 127.0.0.1, `mlflow server` from the MLflow image on the host network."""
    with running_stack(
        tmp_path_factory.mktemp("container-stack"), mlflow_image=built_images["mlflow"]
    ) as stack:
        yield stack
