"""Fixtures for evaluation tests: a throw-away MLflow tracking + registry store, shared by a test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow SQLite store (tracking and model registry) with its artifacts in a temporary folder;
    yields the id of an experiment there (pass it to ``start_run``: no global active experiment is set).

    Module-scoped because creating the SQLite schema takes seconds; tests use distinct runs and model names.
    """
    import mlflow

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_REGISTRY_URI", uri)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        yield mlflow.create_experiment("eval-tests", artifact_location=(root / "artifacts").as_uri())
        if mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(previous)
        mlflow.set_registry_uri(previous)
