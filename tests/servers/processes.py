"""Real PostgreSQL, S3 and MLflow server processes for the `servers` test group, bound to 127.0.0.1.

Each server is a child process in its own process group, started on a free port and waited for with a
bounded deadline; `stop()` terminates the whole group (and kills it if it does not exit), so a failing test
cannot leave a server behind. PostgreSQL comes from the Debian package (`scripts/install-test-servers.sh`);
as root it runs as the `postgres` user, which PostgreSQL requires. The S3 store is a real MinIO binary when
one is on PATH and moto's server mode otherwise (what installs here from PyPI).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from otdistill.tracking.access import Account, as_user, ensure_user

LOCALHOST = "127.0.0.1"
VENV_BIN = Path(sys.executable).parent
# The basic-auth settings the MLflow image ships (docker/Dockerfile.mlflow); a venv server reads the file.
AUTH_CONFIG = Path(__file__).resolve().parents[2] / "docker" / "mlflow-basic-auth.ini"
ADMIN_USERNAME = "admin"  # the file's admin_username
# .ci/run sets this to a file; every server pid is appended so CI can prove none outlived the tests.
PIDFILE_ENV = "OTDISTILL_TEST_SERVER_PIDFILE"


class ServerStartError(RuntimeError):
    """A test server did not come up; the message carries the tail of its log."""


def free_port() -> int:
    """A TCP port that nothing listens on at the time of the call (127.0.0.1 only)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((LOCALHOST, port)) == 0


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class ManagedProcess:
    """One server child process: started in its own session, logs to a file, stopped as a group."""

    name: str
    argv: list[str]
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)
    ready: Callable[[], bool] = lambda: True
    start_timeout_s: float = 60.0
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise ServerStartError(f"{self.name} is already running (pid {self.proc.pid})")
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed after Popen
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
                start_new_session=True,
            )
        finally:
            log.close()
        pidfile = os.environ.get(PIDFILE_ENV)
        if pidfile:
            with open(pidfile, "a", encoding="utf-8") as fh:
                fh.write(f"{self.proc.pid} {self.name}\n")
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(
                    f"{self.name} exited with code {self.proc.returncode} while starting:\n"
                    + _tail(self.log_path)
                )
            if self.ready():
                return
            time.sleep(0.25)
        self.stop()
        raise ServerStartError(
            f"{self.name} was not ready after {self.start_timeout_s:.0f}s:\n{_tail(self.log_path)}"
        )

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> None:
        """Signal the process group; SIGKILL it if it has not exited within `timeout_s`."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        # Workers forked by the server share its group; make sure none outlives the leader.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def kill(self) -> None:
        """Abrupt death (SIGKILL), as when a pod is OOM-killed or its node disappears."""
        self.stop(sig=signal.SIGKILL)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def postgres_bindir() -> Path:
    """The directory with initdb/postgres: $PG_BINDIR, the Debian layout, or PATH."""
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if debian:
        return Path(debian[-1]).parent
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise ServerStartError(
        "PostgreSQL is not installed (no initdb found): run `sudo scripts/install-test-servers.sh` "
        "or `make test-servers-deps`"
    )


def _as_postgres_user(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: drop to the `postgres` account when we are root."""
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


class PostgresServer:
    """A throwaway PostgreSQL cluster in a temp dir, trust auth on 127.0.0.1 only, one database."""

    def __init__(self, workdir: Path, database: str = "mlflow") -> None:
        self.bindir = postgres_bindir()
        # Not under pytest's tmp dir: that one is private to root and the postgres user must own this.
        self.root = Path(tempfile.mkdtemp(prefix="otdistill-pg-"))
        self.datadir = self.root / "data"
        self.database = database
        self.password = secrets.token_hex(16)
        self.port = free_port()
        self.log_path = workdir / "postgres.log"
        if os.geteuid() == 0:
            shutil.chown(self.root, user="postgres")
        self.process = ManagedProcess(
            name="postgres",
            argv=_as_postgres_user(
                [
                    str(self.bindir / "postgres"),
                    "-D",
                    str(self.datadir),
                    "-h",
                    LOCALHOST,
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.root),
                    "-c",
                    "fsync=off",
                    "-c",
                    "max_connections=100",
                ]
            ),
            log_path=self.log_path,
            ready=self._ready,
        )

    @property
    def uri(self) -> str:
        """The superuser's URI over TCP, where the cluster checks passwords (SCRAM), as in production."""
        return f"postgresql://postgres:{self.password}@{LOCALHOST}:{self.port}/{self.database}"

    def sql(self, statement: str) -> None:
        """Run SQL as the superuser over the Unix socket (trusted locally)."""
        done = subprocess.run(
            [
                str(self.bindir / "psql"),
                "-h",
                str(self.root),
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                statement,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise ServerStartError(f"SQL failed ({statement.split()[0]} ...): {done.stderr}")

    def _ready(self) -> bool:
        probe = subprocess.run(
            [str(self.bindir / "pg_isready"), "-h", LOCALHOST, "-p", str(self.port), "-q"],
            check=False,
        )
        return probe.returncode == 0

    def start(self) -> None:
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(pwfile, user="postgres")
        init = subprocess.run(
            _as_postgres_user(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.datadir),
                    "-U",
                    "postgres",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--no-sync",
                    "-E",
                    "UTF8",
                ]
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        pwfile.unlink()
        if init.returncode != 0:
            raise ServerStartError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
        self.process.start()
        self.sql(f"CREATE DATABASE {self.database}")

    def stop(self) -> None:
        # SIGINT is PostgreSQL's "fast shutdown".
        self.process.stop(sig=signal.SIGINT)
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class S3Server:
    """An S3-compatible endpoint with one bucket: MinIO when installed, else moto's server mode."""

    workdir: Path
    bucket: str = "mlflow-artifacts"
    access_key: str = "otdistill-test"
    secret_key: str = "otdistill-test-secret"
    port: int = field(default_factory=free_port)
    kind: str = ""
    process: ManagedProcess | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def start(self) -> None:
        minio = shutil.which("minio")
        if minio:
            self.kind = "minio"
            address = f"{LOCALHOST}:{self.port}"
            argv = [minio, "server", str(self.workdir / "minio-data"), "--address", address]
            env = {"MINIO_ROOT_USER": self.access_key, "MINIO_ROOT_PASSWORD": self.secret_key}
            ready = f"{self.endpoint}/minio/health/live"
        else:
            self.kind = "moto"
            argv = [str(VENV_BIN / "moto_server"), "-H", LOCALHOST, "-p", str(self.port)]
            env = {}
            ready = f"{self.endpoint}/moto-api/"
        self.process = ManagedProcess(
            name=f"s3 ({self.kind})",
            argv=argv,
            log_path=self.workdir / "s3.log",
            env=env,
            ready=lambda: http_ok(ready),
        )
        self.process.start()
        import boto3

        boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        ).create_bucket(Bucket=self.bucket)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


class MlflowServer:
    """`mlflow server` with the PostgreSQL backend store and proxied S3 artifacts, one worker, and MLflow's
    basic-auth app as the manifests run it: `docker/mlflow-basic-auth.ini` (READ for every user), the
    users and grants in the tracking database (libpq's PG* variables), the admin `admin` with a password
    made here (`self.admin`). Every request but /health needs a login.

    With `image`, the server runs in that container image on the host network (the MLflow image the
    manifests deploy, docker/Dockerfile.mlflow, with its own copy of the ini) instead of from this venv;
    its environment reaches the container by name (`docker run -e NAME`), so no credential is on a
    command line.
    """

    def __init__(
        self, workdir: Path, postgres: PostgresServer, s3: S3Server, image: str | None = None
    ) -> None:
        self.port = free_port()
        self.s3 = s3
        self.container = f"otdistill-test-mlflow-{self.port}" if image else None
        self.admin = Account(ADMIN_USERNAME, secrets.token_hex(16))
        env = {
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.admin.password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32),
            "PGHOST": LOCALHOST,
            "PGPORT": str(postgres.port),
            "PGUSER": "postgres",
            "PGPASSWORD": postgres.password,
            "PGDATABASE": postgres.database,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            # Without a bound, uvicorn waits on the clients' keep-alive connections at SIGTERM.
            "MLFLOW_UVICORN_OPTS": "--timeout-graceful-shutdown 2",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_S3_ENDPOINT_URL": s3.endpoint,
            "AWS_ACCESS_KEY_ID": s3.access_key,
            "AWS_SECRET_ACCESS_KEY": s3.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        if not image:
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(AUTH_CONFIG)
        server = [
            "server",
            "--app-name",
            "basic-auth",
            "--backend-store-uri",
            postgres.uri,
            "--artifacts-destination",
            f"s3://{s3.bucket}/artifacts",
            "--host",
            LOCALHOST,
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        if image:
            names = [a for name in env for a in ("-e", name)]
            argv = ["docker", "run", "--rm", "--name", str(self.container), "--network=host", *names]
            argv += [image, "mlflow", *server]
        else:
            argv = [str(VENV_BIN / "mlflow"), *server]
        self.process = ManagedProcess(
            name="mlflow server" + (f" ({image})" if image else ""),
            argv=argv,
            log_path=workdir / "mlflow-server.log",
            env=env,
            ready=lambda: http_ok(f"{self.uri}/health"),
            start_timeout_s=180.0,
        )

    @property
    def uri(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def start(self) -> None:
        self.process.start()

    def stop(self) -> None:
        self.process.stop()
        self._remove_container()

    def kill(self) -> None:
        self.process.kill()
        self._remove_container()

    def _remove_container(self) -> None:
        """A killed `docker run` client leaves its container running: remove it by name."""
        if self.container:
            argv = ["docker", "rm", "-f", self.container]
            subprocess.run(argv, capture_output=True, timeout=60, check=False)

    def restart(self) -> None:
        """Kill the server abruptly and start it again on the same port and stores."""
        self.kill()
        self.start()


@dataclass
class ServerStack:
    """PostgreSQL + S3 + `mlflow server` (from this venv, or from `mlflow_image` on the host network).

    Besides the admin (`mlflow.admin`), two users exist once the stack runs: `pipeline`, the identity the
    tests and the steps log in as (what `cluster.secrets` gives the steps on a cluster), and `reader`,
    who holds only the server's default READ.
    """

    postgres: PostgresServer
    s3: S3Server
    mlflow: MlflowServer
    workdir: Path
    pipeline: Account = field(default_factory=lambda: Account("otdistill-pipeline", secrets.token_hex(16)))
    reader: Account = field(default_factory=lambda: Account("reader", secrets.token_hex(16)))

    def create_users(self) -> None:
        with as_user(self.mlflow.admin):
            for account in (self.pipeline, self.reader):
                ensure_user(self.mlflow.uri, account)

    def stop(self) -> None:
        # Reverse order of start; each stop is idempotent and never raises for a dead process.
        for server in (self.mlflow, self.s3, self.postgres):
            try:
                server.stop()
            except Exception as exc:  # noqa: BLE001 - keep stopping the others
                print(f"warning: stopping {type(server).__name__} failed: {exc}")


@contextlib.contextmanager
def running_stack(workdir: Path, mlflow_image: str | None = None) -> Iterator[ServerStack]:
    """Start the stack, yield it, always stop it (an atexit hook covers an interpreter that skips this)."""
    postgres = PostgresServer(workdir)
    s3 = S3Server(workdir)
    stack = ServerStack(postgres, s3, MlflowServer(workdir, postgres, s3, image=mlflow_image), workdir)
    atexit.register(stack.stop)
    try:
        postgres.start()
        s3.start()
        stack.mlflow.start()
        stack.create_users()
        yield stack
    finally:
        stack.stop()
        atexit.unregister(stack.stop)
