"""Who may change the registry: the pipeline's own MLflow identity, provisioned once by the admin.

The MLflow server that `manifests/` deploys runs MLflow's basic-auth app with `default_permission =
READ` (`docker/mlflow-basic-auth.ini`): every authenticated user reads everything, and changes only what
they hold a grant on. The pipeline logs in as its own user (`MLFLOW_TRACKING_USERNAME` /
`MLFLOW_TRACKING_PASSWORD`, from a Secret in `cluster.secrets`). This module, run once by the admin,
creates that user and gives it EDIT (create runs and model versions, set tags and aliases; no delete, no
re-granting) on the experiment and the registered model of each config. Nobody else holds more than
READ on them, so only the pipeline can move `@champion` or rewrite the tags the promotion gate reads.

Why the admin creates the experiment and the registered model here instead of letting the pipeline's
first run create them: MLflow grants MANAGE to whoever creates a registered model or an experiment, and
any authenticated user may create one. A reader who created the pipeline's registered model name first
would own it (and could grant the pipeline EDIT on it, then move its aliases). Created by the admin,
the names are taken before anyone else can take them.

    MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=... OTDISTILL_PIPELINE_PASSWORD=... \\
      python -m otdistill.tracking.access --tracking-uri http://localhost:5000 --config configs/paper/x.yaml

Passwords are read from the environment only (never a command-line argument, never logged).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from otdistill.environment import environment
from otdistill.tracking.config import TrackingConfig
from otdistill.tracking.connection import redact_uri
from otdistill.tracking.runs import _experiment_id

USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"
PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"
PIPELINE_PASSWORD_ENV = "OTDISTILL_PIPELINE_PASSWORD"
DEFAULT_PIPELINE_USER = "otdistill-pipeline"
# Enough for everything the pipeline does (runs, logged models, artifacts, model versions, tags,
# aliases); MANAGE would add deleting them and granting others access.
PIPELINE_PERMISSION = "EDIT"


@dataclass(frozen=True)
class Account:
    """An MLflow basic-auth user; the password stays out of repr (and so out of logs and tracebacks)."""

    username: str
    password: str = field(repr=False)


@contextlib.contextmanager
def as_user(account: Account | None) -> Iterator[None]:
    """MLflow's clients read the credentials from the environment at every request: set them for the
    duration (None: no credentials, an anonymous client), then restore what was there."""
    login = (account.username, account.password) if account is not None else (None, None)
    with environment(dict(zip((USERNAME_ENV, PASSWORD_ENV), login, strict=True))):
        yield


def auth_client(tracking_uri: str) -> Any:
    """MLflow's `AuthServiceClient` (imported here: it loads the server's auth app)."""
    from mlflow.server.auth.client import AuthServiceClient

    return AuthServiceClient(tracking_uri)


def ensure_user(tracking_uri: str, account: Account) -> None:
    """Create `account` with the calling admin's credentials, or reset its password if it exists (so a
    rotated Secret takes effect by running the provisioning again)."""
    client = auth_client(tracking_uri)
    try:
        client.get_user(account.username)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_user(account.username, account.password)
        return
    client.update_user_password(account.username, account.password)


def grant(tracking_uri: str, username: str, resource_type: str, resource_id: str, permission: str) -> None:
    """`username` holds exactly `permission` on the resource afterwards (MLflow refuses a second grant
    of the same resource: the old one is revoked first, so a re-run also repairs a changed grant)."""
    client = auth_client(tracking_uri)
    try:
        client.grant_user_permission(username, resource_type, resource_id, permission)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        client.revoke_user_permission(username, resource_type, resource_id)
        client.grant_user_permission(username, resource_type, resource_id, permission)


def _registered_model(client: MlflowClient, name: str) -> None:
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_registered_model(name)


def provision_pipeline_identity(
    tracking_uri: str, pipeline: Account, tracking_configs: Iterable[TrackingConfig]
) -> list[str]:
    """With the admin's credentials in the environment: the pipeline user exists with `pipeline`'s
    password and holds EDIT on each config's experiment and registered model, both created here if
    missing. Idempotent. Returns one line per grant, for the operator."""
    ensure_user(tracking_uri, pipeline)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    user, level = pipeline.username, PIPELINE_PERMISSION
    done = []
    for config in tracking_configs:
        experiment_id = _experiment_id(client, config.experiment, config.artifact_location)
        grant(tracking_uri, user, "experiment", experiment_id, level)
        done.append(f"experiment {config.experiment!r} (id {experiment_id}): {level}")
        _registered_model(client, config.registered_model_name)
        grant(tracking_uri, user, "registered_model", config.registered_model_name, level)
        done.append(f"registered model {config.registered_model_name!r}: {level}")
    return done


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--tracking-uri", required=True, help="the MLflow server (e.g. a port-forward)")
    parser.add_argument("--config", action="append", required=True, help="run config (repeatable)")
    parser.add_argument("--pipeline-user", default=DEFAULT_PIPELINE_USER)
    args = parser.parse_args(argv)
    from otdistill.config import ConfigError, load_config

    password = os.environ.get(PIPELINE_PASSWORD_ENV, "")
    missing = [n for n in (USERNAME_ENV, PASSWORD_ENV, PIPELINE_PASSWORD_ENV) if not os.environ.get(n)]
    if missing:
        what = "the admin's login and the pipeline user's password"
        print(f"error: set {', '.join(missing)} ({what})", file=sys.stderr)
        return 2
    try:
        configs = [load_config(path).tracking for path in args.config]
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        lines = provision_pipeline_identity(args.tracking_uri, Account(args.pipeline_user, password), configs)
    except MlflowException as exc:
        print(f"error: {redact_uri(args.tracking_uri)}: {exc.message}", file=sys.stderr)
        return 1
    print(f"user {args.pipeline_user!r} on {redact_uri(args.tracking_uri)}:")
    for line in lines:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
