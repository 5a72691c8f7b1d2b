"""Training survives the tracking server: a real `mlflow server` goes away for 60 s in the middle of training.

The outage has both shapes a server can take: for the first half the server process group is stopped
(SIGSTOP: connections are accepted and never answered, the case where one synchronous MLflow call used to
hang for minutes), for the second half it is killed (connections refused); then it is started again on the
same port, PostgreSQL backend and S3 artifact store. Training (teacher SFT of the tiny teacher, through the
runner and callback every training step uses, inside a real step run) must complete, and every step's
metrics in the trainer's log history must be in MLflow afterwards. The test prints how long the longest
training step and the longest metrics call took during the outage; it asserts no timing (the machine is
shared), only that nothing was lost.

Also here: a failure inside a step run is what propagates when the server is down while the run is closed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from otdistill.data import Example, load_examples
from otdistill.tracking import TrackingConfig, start_pipeline_run, step_run
from otdistill.tracking.metric_buffer import run_buffer
from otdistill.training import runner, train_teacher_sft
from otdistill.training.callbacks import ProgressAndMetricsCallback
from tests.servers.processes import MlflowServer
from tests.training.conftest import MAX_LENGTH, data_config, tiny_config

HUNG_S = 30.0  # SIGSTOP: the server holds connections without answering
DEAD_S = 30.0  # killed: connections refused, until it is started again
OUTAGE_AT_STEP = 5
TAIL_STEPS = 5  # training stops this many steps after the server is back, whatever the machine's speed
MAX_STEPS = 5000  # a bound only: training outlasts the outage on any machine


@pytest.fixture(scope="module")
def examples() -> list[Example]:
    return load_examples(data_config(), progress=False).examples


class UntilServerIsBack(TrainerCallback):  # type: ignore[misc]
    """Records when each optimizer step ends; signals the outage at `OUTAGE_AT_STEP` and stops training
    `TAIL_STEPS` steps after the server is back (so training spans the whole outage and some steps are
    logged after the restart)."""

    def __init__(self, back: threading.Event) -> None:
        self.back = back
        self.reached = threading.Event()
        self.step_ends: list[tuple[int, float]] = []
        self.first_step_after_back: int | None = None

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.step_ends.append((state.global_step, time.monotonic()))
        if state.global_step == OUTAGE_AT_STEP:
            self.reached.set()
        if self.back.is_set():
            if self.first_step_after_back is None:
                self.first_step_after_back = state.global_step
            if state.global_step >= self.first_step_after_back + TAIL_STEPS:
                control.should_training_stop = True


def _outage(
    server: MlflowServer, pace: UntilServerIsBack, back: threading.Event, times: dict[str, float]
) -> None:
    """Stop the server at step `OUTAGE_AT_STEP` for HUNG_S + DEAD_S seconds; always leave it running."""
    try:
        if not pace.reached.wait(timeout=600):
            return
        assert server.process.proc is not None
        times["stopped"] = time.monotonic()
        os.killpg(server.process.proc.pid, signal.SIGSTOP)
        time.sleep(HUNG_S)
        server.kill()  # SIGKILL reaches a stopped process group
        times["killed"] = time.monotonic()
        time.sleep(max(0.0, times["stopped"] + HUNG_S + DEAD_S - time.monotonic()))
        times["restarting"] = time.monotonic()
    finally:
        if not server.process.running or "stopped" in times:
            server.restart()
        times["back"] = time.monotonic()
        back.set()


def test_training_survives_a_60s_tracking_outage(
    tracking_config: TrackingConfig,
    mlflow_server: MlflowServer,
    tiny_pair: tuple[Path, Path],
    examples: list[Example],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Bounded HTTP calls (each attempt in the sender waits at most ~20 s on a hung server).
    config = dataclasses.replace(tracking_config, request_timeout_s=5, max_retries=2, backoff_factor=1)
    back = threading.Event()
    pace = UntilServerIsBack(back)
    log_calls: list[tuple[float, float]] = []  # (start, seconds) of every metrics callback call

    build = runner._build_trainer

    def build_with_pace(*args: Any, **kwargs: Any) -> Any:
        trainer = build(*args, **kwargs)
        trainer.add_callback(pace)
        return trainer

    on_log = ProgressAndMetricsCallback.on_log

    def timed_on_log(self: ProgressAndMetricsCallback, *args: Any, **kwargs: Any) -> None:
        started = time.monotonic()
        on_log(self, *args, **kwargs)
        log_calls.append((started, time.monotonic() - started))

    monkeypatch.setattr(runner, "_build_trainer", build_with_pace)
    monkeypatch.setattr(ProgressAndMetricsCallback, "on_log", timed_on_log)
    times: dict[str, float] = {}
    outage = threading.Thread(target=_outage, args=(mlflow_server, pace, back, times), daemon=True)
    outage.start()
    train_cfg = tiny_config(tmp_path / "out", max_steps=MAX_STEPS, save_steps=MAX_STEPS, loss="none")
    try:
        with start_pipeline_run(config, "outage") as parent, step_run(parent, "train_teacher") as step:
            result = train_teacher_sft(train_cfg, tiny_pair[0], examples, max_length=MAX_LENGTH)
            buffer = run_buffer(step.run_id)
    finally:
        back.wait(timeout=600)
        outage.join(timeout=60)
    assert "stopped" in times and "restarting" in times, times
    assert pace.first_step_after_back is not None
    assert result.global_step == pace.first_step_after_back + TAIL_STEPS

    client = MlflowClient(tracking_uri=config.tracking_uri)
    logged = {int(entry["step"]): entry for entry in result.history}
    assert sorted(logged) == list(range(1, result.global_step + 1))
    keys = {k for entry in logged.values() for k in entry if k != "step"}
    in_mlflow: dict[str, dict[int, float]] = {}
    for key in sorted(keys):
        history = client.get_metric_history(step.run_id, f"train/{key}")
        in_mlflow[key] = {m.step: m.value for m in history}
    for key in keys:
        expected = {s: entry[key] for s, entry in logged.items() if key in entry}
        assert in_mlflow[key] == pytest.approx(expected), key
    assert {"loss", "learning_rate", "grad_norm"} <= keys
    params = client.get_run(step.run_id).data.params
    assert params["teacher_sft.precision.name"] == "fp32"  # logged after training, through the buffer
    assert client.get_run(step.run_id).info.status == "FINISHED"
    assert client.get_run(parent.run_id).info.status == "FINISHED"

    # What the outage cost the training loop (printed, not asserted).
    stopped, restarted = times["stopped"], times["back"]
    ends = dict(pace.step_ends)
    gap = {s: ends[s] - ends[s - 1] for s in ends if s - 1 in ends}
    during = {s: g for s, g in gap.items() if stopped <= ends[s] <= restarted}
    before = [g for s, g in gap.items() if ends[s] < stopped]
    slowest = max(during, key=lambda s: during[s])
    log_during = [d for started, d in log_calls if stopped <= started <= restarted]
    print(
        f"\noutage: server stopped {times['killed'] - stopped:.0f}s (SIGSTOP), killed, started again "
        f"{times['restarting'] - stopped:.0f}s after the stop, answering {restarted - stopped:.0f}s after it"
        f"\nsteps trained during the outage: {len(during)} (steps {min(during)}-{max(during)})"
        f"\nlongest step during the outage: {during[slowest]:.2f}s (step {slowest}; median step before "
        f"the outage {statistics.median(before):.2f}s)"
        f"\nlongest metrics log call during the outage: {max(log_during) * 1000:.1f} ms "
        f"({len(log_during)} calls)"
        f"\nsteps logged by the trainer: {len(logged)}; steps with train/loss in MLflow: "
        f"{len(in_mlflow['loss'])}; metrics sent by the buffer: {buffer.sent} after "
        f"{buffer.failed_attempts} failed attempts"
    )


class FailAtStep(TrainerCallback):  # type: ignore[misc]
    """At step 2: waits until step 1's metrics are in MLflow, kills the server, and fails training."""

    def __init__(self, server: MlflowServer) -> None:
        self.server = server

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if state.global_step == 2:
            active = mlflow.active_run()
            assert active is not None
            assert run_buffer(active.info.run_id).flush(timeout_s=60) == 0
            self.server.kill()
            raise RuntimeError("training failed at step 2")


def test_a_training_failure_propagates_when_the_server_is_down_at_close(
    tracking_config: TrackingConfig,
    mlflow_server: MlflowServer,
    tiny_pair: tuple[Path, Path],
    examples: list[Example],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = dataclasses.replace(tracking_config, request_timeout_s=2, max_retries=0)
    build = runner._build_trainer

    def build_failing(*args: Any, **kwargs: Any) -> Any:
        trainer = build(*args, **kwargs)
        trainer.add_callback(FailAtStep(mlflow_server))
        return trainer

    monkeypatch.setattr(runner, "_build_trainer", build_failing)
    train_cfg = tiny_config(tmp_path / "out", max_steps=4, save_steps=1000, loss="none")
    with (
        caplog.at_level(logging.WARNING, logger="otdistill.tracking.runs"),
        pytest.raises(RuntimeError, match="training failed at step 2") as raised,
        start_pipeline_run(config, "fails-while-down") as parent,
        step_run(parent, "train_teacher") as step,
    ):
        train_teacher_sft(train_cfg, tiny_pair[0], examples, max_length=MAX_LENGTH)
    assert not isinstance(raised.value, MlflowException)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"could not end step run {step.run_id} as FAILED" in warned
    assert f"could not end parent run {parent.run_id} as FAILED" in warned

    mlflow_server.start()
    client = MlflowClient(tracking_uri=config.tracking_uri)
    assert [m.step for m in client.get_metric_history(step.run_id, "train/loss")] == [1]
