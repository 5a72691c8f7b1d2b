"""Training metrics that reach MLflow without ever making training wait for the tracking server.

A training step only appends its metrics to a per-run buffer in memory; a background thread sends them in
`log_batch` calls of at most MLflow's batch limits, oldest first. While the server is down, hung or
restarting, the thread keeps every metric and retries (each call bounded by the HTTP timeout and retries of
`TrackingConfig`, which `configure_client` put in force; between calls it waits up to
`MAX_RETRY_WAIT_S`). Nothing is dropped for an outage: a metric leaves the buffer only when the server
took it, or when the server rejected it for good (a 4xx answer such as a changed param value; logged as
an error, so one bad item cannot hold back the rest).

MLflow's own ``synchronous=False`` logging is not used: its queue logs a failed batch as an error and drops
it (mlflow/utils/async_logging/async_logging_queue.py), so a 60 s outage would lose a minute of metrics.

Each metric keeps the wall-clock time of its step, so a late delivery does not shift it in the UI. The
buffer grows by about 200 bytes per metric during an outage (an hour at 10 metrics per second is ~7 MB).
`flush` waits (bounded) until everything is sent; `step_run` closes the step's buffer before it ends the
run, and an atexit hook gives a process that ends without that a last, short chance.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping

import mlflow
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from otdistill.tracking.connection import TrackingError, redact_uri

log = logging.getLogger(__name__)

# MLflow's limits of one log_batch call.
MAX_BATCH_ITEMS = 1000
MAX_BATCH_PARAMS = 100
# Longest pause between two attempts while the server is failing (the attempts back off up to it).
MAX_RETRY_WAIT_S = 5.0
# How long the end of a training run, and the end of a step run, wait for the buffer to drain: long enough
# for a tracking server to restart, short enough that a server gone for good fails the step visibly.
FLUSH_TIMEOUT_S = 120.0
ATEXIT_FLUSH_S = 10.0

Item = Metric | Param


class UnsentMetricsError(TrackingError):
    """The tracking server did not take a run's buffered metrics before the flush deadline."""


def _rejected_for_good(exc: Exception) -> bool:
    """A 4xx answer other than 429: the server understood and refused; sending again cannot help."""
    if not isinstance(exc, MlflowException):
        return False
    status = exc.get_http_status_code()
    return 400 <= status < 500 and status != 429


class RunLogBuffer:
    """The metrics and params of one MLflow run, sent in the background; `log_*` never wait on the server.

    The sender thread runs only while something is pending, so idle buffers hold no thread.
    """

    def __init__(self, run_id: str, client: MlflowClient, where: str = "") -> None:
        self.run_id = run_id
        self.client = client
        self.where = where
        self._pending: deque[Item] = deque()
        self._in_flight = 0
        self._cond = threading.Condition()
        self._sender: threading.Thread | None = None
        self._stop = threading.Event()
        self.sent = 0
        self.rejected = 0
        self.failed_attempts = 0
        self._consecutive_failures = 0
        self._failing_since: float | None = None

    # ---- producers (the training loop) -----------------------------------------------------------------
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Queue `metrics` at `step`, stamped now; returns at once."""
        now = int(time.time() * 1000)
        self._add([Metric(k, float(v), now, step) for k, v in metrics.items()])

    def log_params(self, params: Mapping[str, str]) -> None:
        """Queue params; returns at once."""
        self._add([Param(k, str(v)) for k, v in params.items()])

    def _add(self, items: list[Item]) -> None:
        if not items:
            return
        with self._cond:
            if self._stop.is_set():
                raise TrackingError(f"the metric buffer of run {self.run_id} is closed")
            self._pending.extend(items)
            self._start_sender()

    def _start_sender(self) -> None:
        """Start the sender unless it runs (called holding the lock)."""
        if self._sender is None and self._pending:
            self._sender = threading.Thread(
                target=self._send_loop, name=f"mlflow-metrics-{self.run_id[:8]}", daemon=True
            )
            self._sender.start()

    @property
    def unsent(self) -> int:
        with self._cond:
            return len(self._pending) + self._in_flight

    # ---- waiting for delivery ----------------------------------------------------------------------------
    def flush(self, timeout_s: float = FLUSH_TIMEOUT_S) -> int:
        """Wait up to `timeout_s` until every queued item was sent (or rejected); returns how many are not."""
        with self._cond:
            self._start_sender()
            self._cond.wait_for(lambda: not self._pending and not self._in_flight, timeout=timeout_s)
            return len(self._pending) + self._in_flight

    def close(self, timeout_s: float = FLUSH_TIMEOUT_S) -> int:
        """`flush`, then stop the sender; returns how many items were never sent."""
        unsent = self.flush(timeout_s)
        self._stop.set()
        return unsent

    def describe_unsent(self) -> str:
        """What is still queued: counts and the step range of the metrics (for error messages)."""
        with self._cond:
            items = list(self._pending)
        steps = [i.step for i in items if isinstance(i, Metric)]
        metrics = len(steps)
        span = f" of steps {min(steps)}-{max(steps)}" if steps else ""
        return f"{metrics} metric(s){span} and {len(items) - metrics} param(s)"

    # ---- the sender thread -------------------------------------------------------------------------------
    def _take_batch(self) -> list[Item]:
        """The oldest items that fit one log_batch call (called holding the lock)."""
        batch: list[Item] = []
        params = 0
        while self._pending and len(batch) < MAX_BATCH_ITEMS:
            item = self._pending[0]
            if isinstance(item, Param):
                if params == MAX_BATCH_PARAMS:
                    break
                params += 1
            batch.append(self._pending.popleft())
        return batch

    def _send(self, batch: list[Item]) -> None:
        self.client.log_batch(
            self.run_id,
            metrics=[i for i in batch if isinstance(i, Metric)],
            params=[i for i in batch if isinstance(i, Param)],
        )

    def _send_loop(self) -> None:
        try:
            while True:
                with self._cond:
                    if self._stop.is_set() or not self._pending:
                        self._sender = None  # under the lock, so `_add` starts a new sender after this
                        self._cond.notify_all()
                        return
                    batch = self._take_batch()
                    self._in_flight = len(batch)
                again = self._deliver(batch)
                with self._cond:
                    self._in_flight = 0
                    self._pending.extendleft(reversed(again))
                    self._cond.notify_all()
                if again:
                    self._stop.wait(min(MAX_RETRY_WAIT_S, 0.5 * 2**self._consecutive_failures))
        finally:  # also on an unexpected error: flush must not wait for a dead thread
            with self._cond:
                if self._sender is threading.current_thread():
                    self._sender = None
                self._cond.notify_all()

    def _deliver(self, batch: list[Item]) -> list[Item]:
        """Send `batch`; returns the items to send again (all of them when the server did not answer)."""
        try:
            self._send(batch)
        except Exception as exc:
            if _rejected_for_good(exc):
                return self._deliver_one_by_one(batch, exc)
            self._failed(exc, len(batch))
            return batch
        self._delivered(len(batch))
        return []

    def _deliver_one_by_one(self, batch: list[Item], batch_error: Exception) -> list[Item]:
        """The server refused the batch: send its items singly so only the refused ones are dropped."""
        if len(batch) == 1:
            self.rejected += 1
            log.error("MLflow refused %r for run %s: %s", batch[0], self.run_id, str(batch_error)[:500])
            return []
        for index, item in enumerate(batch):
            try:
                self._send([item])
            except Exception as exc:
                if not _rejected_for_good(exc):
                    self._failed(exc, len(batch) - index)
                    return batch[index:]
                self.rejected += 1
                log.error("MLflow refused %r for run %s: %s", item, self.run_id, str(exc)[:500])
                continue
            self._delivered(1)
        return []

    def _failed(self, exc: Exception, count: int) -> None:
        self.failed_attempts += 1
        self._consecutive_failures += 1
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            log.warning(
                "MLflow server %s did not take %d metric(s)/param(s) of run %s (%s); keeping them and "
                "retrying (training goes on)",
                self.where,
                count + len(self._pending),
                self.run_id,
                str(exc)[:300],
            )

    def _delivered(self, count: int) -> None:
        self.sent += count
        self._consecutive_failures = 0
        if self._failing_since is not None:
            log.warning(
                "MLflow server %s is back: buffered metrics of run %s are being sent after %.0f s of "
                "failures (%d failed attempt(s) so far)",
                self.where,
                self.run_id,
                time.monotonic() - self._failing_since,
                self.failed_attempts,
            )
            self._failing_since = None


# ---- one buffer per run in this process ---------------------------------------------------------------
_buffers: dict[str, RunLogBuffer] = {}
_buffers_lock = threading.Lock()


def run_buffer(run_id: str) -> RunLogBuffer:
    """This process's buffer of `run_id`, created on first use against the current tracking URI."""
    with _buffers_lock:
        buffer = _buffers.get(run_id)
        if buffer is None:
            uri = mlflow.get_tracking_uri()
            buffer = RunLogBuffer(run_id, MlflowClient(tracking_uri=uri), where=redact_uri(uri))
            _buffers[run_id] = buffer
        return buffer


def close_run_buffer(run_id: str, timeout_s: float = FLUSH_TIMEOUT_S, *, strict: bool = True) -> int:
    """Send what the run's buffer holds, waiting up to `timeout_s`, and forget the buffer.

    Returns how many items stayed unsent (0 when the run never buffered anything). With `strict`, unsent
    items raise `UnsentMetricsError` naming them instead: a step must not end as if its metrics were safe.
    """
    with _buffers_lock:
        buffer = _buffers.pop(run_id, None)
    if buffer is None:
        return 0
    unsent = buffer.close(timeout_s)
    if unsent:
        message = (
            f"MLflow server {buffer.where} did not take {buffer.describe_unsent()} of run {run_id} within "
            f"{timeout_s:g}s after training ({buffer.failed_attempts} failed attempt(s)); they are lost "
            "with this process"
        )
        if strict:
            raise UnsentMetricsError(message)
        log.error(message)
    return unsent


def _close_all_at_exit() -> None:
    deadline = time.monotonic() + ATEXIT_FLUSH_S
    for run_id in list(_buffers):
        close_run_buffer(run_id, max(deadline - time.monotonic(), 0.0), strict=False)


atexit.register(_close_all_at_exit)
