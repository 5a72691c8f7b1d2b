"""The local DockerRunner reports a step's real exit status (`otdistill.pipelines.containers`).

kfp 2.17's own `run_docker_container` starts containers with `auto_remove` and reports 0 (SUCCESS) when a
container is gone before its status is read, which a step that fails fast or is killed makes likely
(kubeflow/pipelines#13332). Ours reads the status, then removes the container, on every path.
"""

from __future__ import annotations

import importlib.util
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from otdistill.pipelines.containers import run_docker_container


@pytest.fixture
def client(built_images: dict[str, str]) -> Iterator[Any]:
    from docker.client import DockerClient

    client = DockerClient.from_env()
    try:
        yield client
    finally:
        client.close()


@pytest.mark.parametrize(
    ("script", "status"),
    [
        ("echo done", 0),
        ("exit 3", 3),  # a step that fails at once: the case the upstream runner reads as 0
        ("sleep 120", 137),  # killed from outside while it runs, as the kernel kills a step out of memory
    ],
)
def test_the_exit_status_is_read_and_the_container_removed(
    client: Any, built_images: dict[str, str], script: str, status: int, capsys: pytest.CaptureFixture[str]
) -> None:
    mark = f"otdistill.test={uuid.uuid4().hex}"
    key, value = mark.split("=")
    if status == 137:
        threading.Thread(target=_kill_when_running, args=(client, mark), daemon=True).start()
    code = run_docker_container(
        client, built_images["cpu"], ["sh", "-c", script], volumes={}, labels={key: value}
    )
    assert code == status
    assert client.containers.list(all=True, filters={"label": mark}) == []  # removed on every path
    if status == 0:
        assert "done" in capsys.readouterr().out  # the step's output is streamed as before


class _SlowReader:
    """The engine's client, except that a container's log stream ends 3 s after its last line (the runner
    is slow to read it, as on a loaded machine): time for an auto-removed container to disappear."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.images = client.images

    @property
    def containers(self) -> _SlowReader:
        return self

    def run(self, **kwargs: Any) -> Any:
        container = self._client.containers.run(**kwargs)
        logs = container.logs

        def slow_logs(**log_kwargs: Any) -> Iterator[bytes]:
            yield from logs(**log_kwargs)
            time.sleep(3)

        container.logs = slow_logs
        return container


def test_a_container_gone_before_its_status_is_read_still_fails(
    client: Any, built_images: dict[str, str]
) -> None:
    """The upstream runner's failure, made certain: its auto-removed container is gone when `wait` asks,
    and it answers 0. Ours answers the real status. When the first assertion fails, kfp has fixed
    kubeflow/pipelines#13332: drop `run_docker_container` and this module."""
    upstream = _kfp_run_docker_container()
    command = ["sh", "-c", "exit 3"]
    assert upstream(_SlowReader(client), built_images["cpu"], command, volumes={}) == 0  # the bug
    assert run_docker_container(_SlowReader(client), built_images["cpu"], command, volumes={}) == 3


def test_the_docker_runner_installs_it_in_kfp_local(tmp_path: Any) -> None:
    from kfp.local import docker_task_handler

    from otdistill.config import RunConfig
    from otdistill.pipelines.containers import docker_runner

    docker_runner(RunConfig(), tmp_path / "run", "local-1")
    assert docker_task_handler.run_docker_container is run_docker_container


def _kill_when_running(client: Any, mark: str) -> None:
    """SIGKILL the container labelled `mark` once it runs (exit status 137, like an OOM kill)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for container in client.containers.list(filters={"label": mark, "status": "running"}):
            container.kill()
            return
        time.sleep(0.2)


def _kfp_run_docker_container() -> Any:
    """kfp's own `run_docker_container`, from a fresh copy of its module (`docker_runner` replaces the
    attribute of the imported one)."""
    from kfp.local import docker_task_handler

    spec = importlib.util.spec_from_file_location("kfp_docker_task_handler", docker_task_handler.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.run_docker_container
