"""Who holds an alias: "nobody" only when the registry says so; any other error is raised.

Read as "no champion", a refused or failed lookup would let the gate promote a candidate over a champion it
could not see.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from otdistill.tracking.scores import alias_holder, champion_version


def test_no_model_and_no_holder_mean_no_champion(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert alias_holder(client, "never-registered", "champion") is None
    client.create_registered_model("registered")
    assert champion_version(client, "registered", "champion") is None


def test_a_lookup_that_fails_is_raised_not_read_as_no_champion(monkeypatch: pytest.MonkeyPatch) -> None:
    # a real HTTP client against a port nothing listens on: the registry could not be asked at all
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    client = MlflowClient(tracking_uri="http://127.0.0.1:9", registry_uri="http://127.0.0.1:9")
    with pytest.raises(MlflowException) as raised:
        alias_holder(client, "student", "champion")
    assert raised.value.error_code == "INTERNAL_ERROR"
