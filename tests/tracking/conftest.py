"""Keep MLflow's process-global state (tracking/registry URIs, HTTP env settings) from leaking out of
these tests: `configure_client` sets them on purpose, for the step process it runs in."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.tracking.mlflow_state import restore_mlflow_state


@pytest.fixture(autouse=True)
def _isolated_mlflow_state() -> Iterator[None]:
    with restore_mlflow_state():
        yield
