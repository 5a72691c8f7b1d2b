"""Pointing the MLflow client at a server, with bounded retries and a preflight reachability check.

MLflow reads its HTTP retry/timeout settings from environment variables on every request, so
`configure_client` sets them from `TrackingConfig` before anything talks to a server. `preflight` fails a
step within `preflight_timeout_s` with an error naming the server, before the step creates a run or a model
version, so an outage cannot leave half a registration behind. URIs are redacted before they appear in any
message: tracking URIs may carry ``user:password@`` or tokens in the query string.
"""

from __future__ import annotations

import logging
import os
import time
import urllib.parse

import mlflow
import requests
from mlflow.tracking import MlflowClient

from otdistill.tracking.config import TrackingConfig

log = logging.getLogger(__name__)

REMOTE_SCHEMES = ("http", "https")


class TrackingError(RuntimeError):
    """Base class of the errors this package raises about tracking and the registry."""


class TrackingServerUnavailableError(TrackingError):
    """The MLflow tracking server did not answer its health check in time."""


def redact_uri(uri: str) -> str:
    """`uri` without credentials: the password in the user info and every query value are masked."""
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        return "<unparseable URI>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"***@{host}"
    query = urllib.parse.urlencode([(k, "***") for k, _ in urllib.parse.parse_qsl(parts.query)])
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def is_remote(uri: str) -> bool:
    """True for an MLflow server reached over HTTP(S), False for local stores (sqlite, file)."""
    return urllib.parse.urlsplit(uri).scheme in REMOTE_SCHEMES


def configure_client(config: TrackingConfig) -> None:
    """Set MLflow's HTTP retry/timeout env vars and the tracking/registry URIs from `config`.

    Call before the first MLflow call of a process; later calls re-apply the settings.
    """
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(config.max_retries)
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(config.request_timeout_s)
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = str(config.backoff_factor)
    tracking_uri = config.resolved_tracking_uri()
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    registry_uri = config.resolved_registry_uri()
    if registry_uri:
        mlflow.set_registry_uri(registry_uri)


def tracking_client(config: TrackingConfig | None = None, *, connect: bool = True) -> MlflowClient:
    """The one way this package builds an MLflow client (tracking and registry).

    config: whose tracking and registry URIs the client uses; None: the process's current ones
      (``mlflow.get_tracking_uri()`` / ``get_registry_uri()``: what an earlier `configure_client` set,
      else the environment), for code that gets no config (resolving a ``models:/`` URI in evaluation).
    connect: first apply `config`'s retry/timeout settings and URIs (`configure_client`) and check that
      the server answers (`preflight`, bounded), so a dead server fails here with its name, before the
      caller changes anything. Off for a client of a run this process already reached (`TrackedRun`).
    """
    if config is None:
        return MlflowClient()
    if connect:
        configure_client(config)
        preflight(config)
    return MlflowClient(
        tracking_uri=config.resolved_tracking_uri() or None,
        registry_uri=config.resolved_registry_uri() or None,
    )


def preflight(config: TrackingConfig) -> None:
    """Raise `TrackingServerUnavailableError` unless the tracking (and registry) server answers ``/health``.

    Polls for at most ``config.preflight_timeout_s`` seconds in total, so a server that is restarting gets
    a moment to come back while a server that is down fails the step quickly. Local stores pass at once.
    """
    uris = {config.resolved_tracking_uri(), config.resolved_registry_uri()}
    for uri in sorted(u for u in uris if u and is_remote(u)):
        _wait_healthy(uri, config.preflight_timeout_s)


def _wait_healthy(uri: str, timeout_s: float) -> None:
    url = uri.rstrip("/") + "/health"
    deadline = time.monotonic() + timeout_s
    last_error = "no answer"
    attempt = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        attempt += 1
        try:
            resp = requests.get(url, timeout=min(5.0, max(remaining, 0.1)))
            if resp.status_code == 200:
                log.debug("MLflow server %s healthy after %d attempt(s)", redact_uri(uri), attempt)
                return
            last_error = f"HTTP {resp.status_code}"
        except requests.RequestException as exc:
            last_error = type(exc).__name__
        time.sleep(min(0.5 * attempt, 2.0, max(deadline - time.monotonic(), 0)))
    raise TrackingServerUnavailableError(
        f"MLflow tracking server at {redact_uri(uri)} is unreachable: no healthy answer from /health "
        f"within {timeout_s:g}s ({attempt} attempt(s), last error: {last_error}). "
        "Check that the server is running and that this namespace may reach it (NetworkPolicy)."
    )
