"""Who can change the registry, against the real `mlflow server` running MLflow's basic-auth app as the
manifests deploy it (docker/mlflow-basic-auth.ini: every user READ by default).

The admin provisions the pipeline's identity (`otdistill.tracking.access`): it creates the experiment and
the registered model and grants the pipeline user EDIT on both. The pipeline user then logs, registers and
promotes a student. A user with only the default READ can read all of it, but can neither move @champion
nor change a version's tags (MLflow answers 403, PERMISSION_DENIED); a client without credentials gets
401. MLflow's own rule that the creator of a registered model gets MANAGE on it is shown too: it is why the
admin, not the pipeline's first run, creates the pipeline's registered model.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from otdistill.tracking import TrackingConfig, register_and_promote
from otdistill.tracking.access import PIPELINE_PERMISSION, as_user, auth_client, provision_pipeline_identity
from otdistill.tracking.registry import METRIC_TAG_PREFIX, STATUS_TAG
from tests.servers.processes import ServerStack
from tests.servers.test_mlflow_server import log_student_run


def _denied(call: Callable[[], object], code: str) -> MlflowException:
    with pytest.raises(MlflowException) as caught:
        call()
    assert caught.value.error_code == code, caught.value
    return caught.value


def test_only_the_pipeline_identity_can_move_the_champion_or_rewrite_gate_tags(
    server_stack: ServerStack, tiny_pair: tuple[Path, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    mlflow_server, pipeline, reader = server_stack.mlflow, server_stack.pipeline, server_stack.reader
    uri = mlflow_server.uri
    suffix = uuid.uuid4().hex[:8]
    config = TrackingConfig(
        tracking_uri=uri,
        experiment=f"auth-{suffix}",
        registered_model_name=f"auth-student-{suffix}",
        promotion_metric="rougeLsum",
        preflight_timeout_s=5.0,
        race_settle_s=0.1,
    )
    name = config.registered_model_name
    with as_user(mlflow_server.admin):
        granted = provision_pipeline_identity(uri, pipeline, [config])
        assert len(granted) == 2
        # Run again (a rotated password, a second config): nothing breaks, the grants stay.
        provision_pipeline_identity(uri, pipeline, [config])
        grants = auth_client(uri)
        assert grants.get_user_permission(pipeline.username, "registered_model", name).permission == "EDIT"
        assert grants.get_user_permission(reader.username, "registered_model", name).permission == "READ"
    assert PIPELINE_PERMISSION == "EDIT"

    # The pipeline's identity registers v1 and promotes it: EDIT is enough for all of it.
    _, student_dir = tiny_pair
    with as_user(pipeline):
        run_id, model_uri = log_student_run(config, student_dir, 0.30)
        decision = register_and_promote(run_id, 0.30, config, model_uri=model_uri)
    assert decision.promoted and decision.version == "1"

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    with as_user(reader):
        # Readers (and serving) read everything.
        champion = client.get_model_version_by_alias(name, "champion")
        assert champion.version == "1" and champion.tags[STATUS_TAG] == "promoted"
        # ...but cannot move @champion, nor rewrite the tags the promotion gate reads.
        _denied(lambda: client.set_registered_model_alias(name, "champion", "1"), "PERMISSION_DENIED")
        _denied(lambda: client.delete_registered_model_alias(name, "champion"), "PERMISSION_DENIED")
        _denied(lambda: client.set_model_version_tag(name, "1", STATUS_TAG, "rejected"), "PERMISSION_DENIED")
        metric_tag = METRIC_TAG_PREFIX + "rougeLsum"
        _denied(lambda: client.set_model_version_tag(name, "1", metric_tag, "0.9"), "PERMISSION_DENIED")
        _denied(lambda: client.delete_model_version_tag(name, "1", STATUS_TAG), "PERMISSION_DENIED")
        # ...nor register a version of it, nor write into the pipeline's runs.
        _denied(lambda: client.create_model_version(name, model_uri, run_id), "PERMISSION_DENIED")
        _denied(lambda: client.set_tag(run_id, "otdistill.status", "x"), "PERMISSION_DENIED")
        # The name is taken: a reader cannot create it afresh and so become its owner.
        _denied(lambda: client.create_registered_model(name), "RESOURCE_ALREADY_EXISTS")
        # MLflow's own rule: whoever creates a registered model gets MANAGE on it. Had the pipeline's
        # model not existed yet, the reader would now own it; provisioning creates it first for that.
        own = f"reader-own-{suffix}"
        client.create_registered_model(own)
        client.set_registered_model_tag(own, "owner", "reader")
    with as_user(mlflow_server.admin):
        assert auth_client(uri).get_user_permission(reader.username, "registered_model", own).permission == (
            "MANAGE"
        )
    with as_user(None):
        _denied(lambda: client.get_registered_model(name), "UNAUTHENTICATED")
        _denied(lambda: client.set_registered_model_alias(name, "champion", "1"), "UNAUTHENTICATED")

    with as_user(pipeline):
        assert client.get_model_version(name, "1").tags[STATUS_TAG] == "promoted"
        assert client.get_registered_model(name).aliases == {"champion": "1"}
    # No password reached this process's output (MLflow's and otdistill's logging included).
    out, err = capfd.readouterr()
    for account in (mlflow_server.admin, pipeline, reader):
        assert account.password not in out + err
