"""Snapshot and restore of MLflow's process-global client state, for test isolation.

MLflow keeps the URIs given to `set_tracking_uri` / `set_registry_uri` in module globals (None = "not set,
resolve from the environment") and mirrors them into env vars. Restoring through the public setters with
the raw previous value (None included) brings both back; reading that raw value needs the private globals.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import mlflow
from mlflow.tracking._model_registry import utils as registry_utils
from mlflow.tracking._tracking_service import utils as tracking_utils

MLFLOW_ENV = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
)


@contextmanager
def restore_mlflow_state() -> Iterator[None]:
    """Put the env vars above and mlflow's URI globals back as they were, ending any run left active."""
    saved_env = {name: os.environ.get(name) for name in MLFLOW_ENV}
    saved_tracking = tracking_utils._tracking_uri
    saved_registry = registry_utils._registry_uri
    try:
        yield
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(saved_tracking)  # type: ignore[arg-type]  # None = unset, as it was
        mlflow.set_registry_uri(saved_registry)  # type: ignore[arg-type]
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
