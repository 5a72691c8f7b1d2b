"""Session fixtures for the `servers` group: PostgreSQL + S3 + `mlflow server` (basic-auth), all on 127.0.0.1.

The stack starts once per test session (about 10 s) on first use and is always torn down: by the fixture's
finaliser after the last test (also when tests fail) and, should the interpreter exit without running
finalisers, by an atexit hook. Every test that uses it is marked `servers` automatically.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from otdistill.tracking import TrackingConfig
from otdistill.tracking.access import as_user
from tests.servers.processes import MlflowServer, ServerStack, running_stack
from tests.tracking.mlflow_state import restore_mlflow_state


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.servers)


@pytest.fixture(scope="session")
def server_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerStack]:
    with running_stack(tmp_path_factory.mktemp("servers")) as stack:
        yield stack


@pytest.fixture(autouse=True)
def _isolated_mlflow_state() -> Iterator[None]:
    """The tracking code points MLflow's globals at the test server; later tests must not inherit that."""
    with restore_mlflow_state():
        yield


@pytest.fixture()
def mlflow_server(server_stack: ServerStack) -> Iterator[MlflowServer]:
    """The running tracking server, logged in as the pipeline's user for the test (the server runs
    MLflow's basic-auth app); restarted after a test that left it stopped."""
    with as_user(server_stack.pipeline):
        yield server_stack.mlflow
    if not server_stack.mlflow.process.running:
        server_stack.mlflow.start()


@pytest.fixture()
def tracking_config(mlflow_server: MlflowServer) -> TrackingConfig:
    """A config on the live server with a fresh experiment and registered model name per test."""
    suffix = uuid.uuid4().hex[:8]
    return TrackingConfig(
        tracking_uri=mlflow_server.uri,
        experiment=f"servers-{suffix}",
        registered_model_name=f"student-{suffix}",
        promotion_metric="rougeLsum",
        promotion_margin=0.01,
        request_timeout_s=10,
        max_retries=6,  # backoff 0+2+4+8+16+32 s: rides out a restart on a loaded CI machine
        backoff_factor=1,
        preflight_timeout_s=5.0,
        race_settle_s=0.3,
    )
