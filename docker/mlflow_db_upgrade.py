#!/usr/bin/env python3
"""`mlflow db upgrade` of the tracking server's database, one pod at a time (a PostgreSQL advisory lock).

The init container of every MLflow server pod runs this (manifests/base/mlflow/mlflow-deployment.yaml;
installed in the MLflow image as `mlflow-db-upgrade`). It reads the database URI from
MLFLOW_BACKEND_STORE_URI, the variable the server container reads, so the URI is built in one place (the
Deployment's env). On an empty database `mlflow db upgrade` creates the tables; on an existing one it
migrates them to this image's MLflow version, or does nothing when they are current.

Why a lock: `mlflow db upgrade` is not safe to run twice at once. Two runs on an empty PostgreSQL database
both see no tables and one fails with a duplicate-key error in the catalog (probed: 3 of 3 trials). Prod
starts two replicas (and a rolling update starts surge pods), so the upgrade runs inside a session-level
`pg_advisory_lock`. The later pods wait, then find the schema current and do nothing. The lock is tied to
the session, so a pod that dies mid-upgrade releases it, and the next pod retries. Server-side TCP
keepalives are shortened for this session, so a lock held by a vanished node ends in about a minute,
not the operating system's two hours.

The auth tables of MLflow's basic-auth app (users and grants, `docker/mlflow-basic-auth.ini`) are
migrated under the same lock, right after, when MLFLOW_AUTH_CONFIG_PATH names that file: `mlflow server
--app-name basic-auth` would otherwise create them in every pod at once, with the same race.

Exit status: that of `mlflow db upgrade` (then of the auth tables' upgrade); 2 for a missing or
non-PostgreSQL URI; 1 when the database stays unreachable past --connect-timeout-s (PostgreSQL may still
be starting on a fresh install).
"""

from __future__ import annotations

import argparse
import configparser
import os
import subprocess
import sys
import time

import sqlalchemy
from sqlalchemy.pool import NullPool

URI_ENV = "MLFLOW_BACKEND_STORE_URI"
AUTH_CONFIG_ENV = "MLFLOW_AUTH_CONFIG_PATH"
# The advisory lock's key: any bigint that no other user of the database takes. Tests take it too.
LOCK_KEY = 0x6D6C666C6F772D64  # b"mlflow-d"
# Server-side keepalive of the lock session (seconds): a dead peer is noticed after idle + interval*count.
KEEPALIVE = {"tcp_keepalives_idle": 30, "tcp_keepalives_interval": 10, "tcp_keepalives_count": 3}


def log(message: str) -> None:
    print(f"mlflow-db-upgrade: {message}", file=sys.stderr, flush=True)


def connect(engine: sqlalchemy.Engine, timeout_s: float) -> sqlalchemy.Connection:
    """A connection, retried while the database does not answer yet, for at most `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return engine.connect()
        except sqlalchemy.exc.OperationalError as exc:
            if time.monotonic() >= deadline:
                raise
            log(f"database not reachable yet, retrying in 2 s: {str(exc).splitlines()[0]}")
            time.sleep(2)


def auth_database_uri() -> str | None:
    """`database_uri` of the basic-auth app's config file (MLFLOW_AUTH_CONFIG_PATH), as MLflow's
    `read_auth_config` reads it; None when the server runs without that app's config."""
    path = os.environ.get(AUTH_CONFIG_ENV, "")
    if not path:
        return None
    config = configparser.ConfigParser()
    if not config.read(path):
        raise SystemExit(f"mlflow-db-upgrade: {AUTH_CONFIG_ENV}={path} cannot be read")
    return config["mlflow"]["database_uri"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--connect-timeout-s", type=float, default=300.0)
    args = parser.parse_args(argv)
    uri = os.environ.get(URI_ENV, "")
    if not uri:
        log(f"{URI_ENV} is not set: it names the database to upgrade")
        return 2
    url = sqlalchemy.engine.make_url(uri)
    if url.get_backend_name() != "postgresql":
        log(f"{URI_ENV} is a {url.get_backend_name()!r} URI; the advisory lock needs PostgreSQL")
        return 2
    # AUTOCOMMIT: the lock session holds no transaction open while the upgrade runs in its own session.
    engine = sqlalchemy.create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with connect(engine, args.connect_timeout_s) as conn:
            for name, value in KEEPALIVE.items():
                conn.execute(sqlalchemy.text(f"SET {name} = {int(value)}"))
            got = conn.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar()
            if not got:
                log("another pod is upgrading the schema; waiting for its lock")
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_KEY})
            log("lock held; running mlflow db upgrade")
            # The URI is an argument of the CLI; only this container's processes can read it there.
            done = subprocess.run([sys.executable, "-m", "mlflow", "db", "upgrade", uri], check=False)
            auth_uri = auth_database_uri()
            if done.returncode == 0 and auth_uri is not None:
                log("running the basic-auth tables' upgrade")
                auth = [sys.executable, "-m", "mlflow.server.auth", "db", "upgrade", "--url", auth_uri]
                done = subprocess.run(auth, check=False)
        # Closing the session released the lock.
    except sqlalchemy.exc.OperationalError as exc:
        log(f"database {url.host}:{url.port}/{url.database} unreachable: {str(exc).splitlines()[0]}")
        return 1
    finally:
        engine.dispose()
    log("schema is current" if done.returncode == 0 else f"mlflow db upgrade failed ({done.returncode})")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
