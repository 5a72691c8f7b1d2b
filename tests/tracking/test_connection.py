"""TrackingConfig validation, URI redaction, client settings and the bounded preflight check."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from otdistill.tracking import TrackingConfig, TrackingServerUnavailableError, configure_client, preflight
from otdistill.tracking.connection import is_remote, redact_uri


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        self.send_response(self.status if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def health_server() -> Iterator[HTTPServer]:
    server = HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_config_rejects_bad_values_naming_each() -> None:
    with pytest.raises(ValueError) as err:
        TrackingConfig(promotion_margin=-0.1, request_timeout_s=0, max_retries=-1, champion_alias="")
    message = str(err.value)
    for field in ("promotion_margin", "request_timeout_s", "max_retries", "champion_alias"):
        assert field in message
    with pytest.raises(ValueError, match="promotion_margin"):
        TrackingConfig(promotion_margin=float("nan"))


def test_uri_resolution_prefers_config_then_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env-server:5000")  # restored by monkeypatch
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    assert TrackingConfig().resolved_tracking_uri() == "http://env-server:5000"
    assert TrackingConfig().resolved_registry_uri() == "http://env-server:5000"
    config = TrackingConfig(tracking_uri="http://a:1", registry_uri="http://b:2")
    assert (config.resolved_tracking_uri(), config.resolved_registry_uri()) == ("http://a:1", "http://b:2")


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("http://mlflow.mlflow.svc:5000", "http://mlflow.mlflow.svc:5000"),
        ("https://alice:s3cr3t@mlflow.example.com/", "https://alice:***@mlflow.example.com/"),
        ("https://tok3n@mlflow.example.com", "https://***@mlflow.example.com"),
        (
            "postgresql://mlflow:pw@db:5432/mlflow?sslmode=require",
            "postgresql://mlflow:***@db:5432/mlflow?sslmode=%2A%2A%2A",
        ),
    ],
)
def test_redact_uri_hides_credentials(uri: str, expected: str) -> None:
    assert redact_uri(uri) == expected


def test_is_remote() -> None:
    assert is_remote("http://x:5000") and is_remote("https://x")
    assert not is_remote("sqlite:///tmp/m.db") and not is_remote("file:///tmp/mlruns")


def test_configure_client_sets_bounded_http_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    # MLflow mirrors its URIs into these env vars; monkeypatch restores them afterwards.
    for var in (
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
        "MLFLOW_HTTP_REQUEST_TIMEOUT",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
        "MLFLOW_TRACKING_URI",
        "MLFLOW_REGISTRY_URI",
    ):
        monkeypatch.delenv(var, raising=False)
    previous = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    try:
        config = TrackingConfig(tracking_uri="http://127.0.0.1:1", max_retries=2, request_timeout_s=7)
        configure_client(config)
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"
        assert os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] == "1"
        assert mlflow.get_tracking_uri() == "http://127.0.0.1:1"
        assert mlflow.get_registry_uri() == "http://127.0.0.1:1"
        # A later config naming only another tracking server must not keep the first one's registry.
        assert TrackingConfig(tracking_uri="http://other:5000").resolved_registry_uri() == "http://other:5000"
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])


def test_preflight_fails_within_budget_and_never_prints_password() -> None:
    port = closed_port()
    config = TrackingConfig(tracking_uri=f"http://bob:hunter2@127.0.0.1:{port}", preflight_timeout_s=1.5)
    started = time.monotonic()
    with pytest.raises(TrackingServerUnavailableError) as err:
        preflight(config)
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 4.0, elapsed
    message = str(err.value)
    assert f"http://bob:***@127.0.0.1:{port}" in message
    assert "hunter2" not in message
    assert "within 1.5s" in message


def test_preflight_passes_for_healthy_server_and_reports_http_errors(health_server: HTTPServer) -> None:
    port = health_server.server_address[1]
    preflight(TrackingConfig(tracking_uri=f"http://127.0.0.1:{port}", preflight_timeout_s=2))
    _Health.status = 503
    try:
        with pytest.raises(TrackingServerUnavailableError, match="HTTP 503"):
            preflight(TrackingConfig(tracking_uri=f"http://127.0.0.1:{port}", preflight_timeout_s=1))
    finally:
        _Health.status = 200


def test_preflight_skips_local_stores(tmp_path: object) -> None:
    preflight(TrackingConfig(tracking_uri="sqlite:////nonexistent/dir/mlflow.db", preflight_timeout_s=0.1))
