"""What `otdistill run` shows a person (otdistill.run_console), and how steps report progress
(otdistill.progress).

The console is checked against real kfp.local on a two-step pipeline of tiny components (seconds); the whole
otdistill DAG through it is in test_e2e.py.
"""

# No `from __future__ import annotations`: kfp reads the components' annotations as types.
import io
import json
import logging
import os
import re
import sys
from pathlib import Path

import pytest
from kfp import dsl, local

from otdistill.progress import MARKER, PROGRESS_ENV, parse_event, progress_bar
from otdistill.run_console import STEP_ENV, RunConsole, StepFailedError, error_excerpt, run_console

# ---- progress bars in a step ------------------------------------------------------------------------------


def test_under_otdistill_run_a_bar_writes_marked_events_ending_with_done(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(PROGRESS_ENV, "lines")
    out = io.StringIO()
    with progress_bar(total=3, desc="train", unit="step", file=out, mininterval=0) as bar:
        for _ in range(3):
            bar.update(1)
        bar.set_postfix(loss="1.5", refresh=False)
    lines = out.getvalue().splitlines()
    assert lines and all(line.startswith(MARKER) for line in lines)
    assert "\r" not in out.getvalue()
    events = [parse_event(line) for line in lines]
    assert all(e is not None for e in events)
    last = events[-1]
    assert last is not None
    assert (last["desc"], last["n"], last["total"], last["unit"], last["done"]) == (
        "train",
        3,
        3,
        "step",
        True,
    )
    assert "loss=1.5" in last["postfix"]
    assert not any(e["done"] for e in events[:-1] if e is not None)


def test_under_otdistill_run_events_are_throttled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PROGRESS_ENV, "lines")
    out = io.StringIO()
    for _ in progress_bar(range(10_000), desc="fast", file=out):
        pass
    assert len(out.getvalue().splitlines()) <= 3  # the first state, maybe one more, and the final one


def test_off_a_terminal_a_bar_writes_a_few_whole_text_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    out = io.StringIO()  # not a terminal: a pod log or a redirected file
    for _ in progress_bar(range(10_000), desc="tokenizing", file=out):
        pass
    text = out.getvalue()
    assert "\r" not in text and MARKER not in text
    lines = text.splitlines()
    assert 1 <= len(lines) <= 3 and "tokenizing: 100%" in lines[-1] and "10000/10000" in lines[-1]


def test_a_disabled_bar_writes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PROGRESS_ENV, "lines")
    out = io.StringIO()
    for _ in progress_bar(range(5), file=out, disable=True):
        pass
    assert out.getvalue() == ""


def test_parse_event_ignores_other_lines() -> None:
    assert parse_event("    [KFP Executor] hello") is None
    assert parse_event(f"    {MARKER}not json") is None
    assert parse_event(f"    {MARKER}" + json.dumps({"id": "1-1", "n": 2})) == {"id": "1-1", "n": 2}


# ---- the console --------------------------------------------------------------------------------------


def test_error_excerpt_is_the_exception_of_the_last_traceback() -> None:
    lines = [
        "[KFP Executor] Got executor_input:",
        "Traceback (most recent call last):",
        '  File "a.py", line 1, in <module>',
        "ValueError: first",
        "",
        "During handling of the above exception, another exception occurred:",
        "",
        "Traceback (most recent call last):",
        '  File "/x/ephemeral_component.py", line 9, in boom',
        '    raise RuntimeError("data source /nope does not exist")',
        "    ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^",
        "RuntimeError: data source /nope does not exist",
        "  (set data.source)",
        "-" * 80,
    ]
    error, headline = error_excerpt(lines)
    assert headline == "RuntimeError: data source /nope does not exist"
    assert error == ["RuntimeError: data source /nope does not exist", "  (set data.source)"]
    tail, last = error_excerpt(["loading", "Killed"])  # no traceback (e.g. out of memory): the last lines
    assert tail == ["loading", "Killed"] and last == "Killed"


def test_a_terminal_gets_a_live_line_the_log_a_few_bar_states(tmp_path: Path) -> None:
    terminal = io.StringIO()
    console = RunConsole(terminal, tmp_path / "run.log", tty=True)
    console.open()
    console.step_begin("train-teacher")
    console.step_runs()
    for n in range(1, 5):
        event = {"id": "7-1", "desc": "teacher_sft", "n": n, "total": 4, "elapsed": n, "unit": "step"}
        console.feed(f"    {MARKER}{json.dumps({**event, 'done': n == 4})}\n")
        console._drawn_at = 0.0  # no redraw throttling in the test
    console.feed("    [KFP Executor] step output\n")
    console.step_end(True)
    console.close()
    shown = terminal.getvalue()
    assert "\r\x1b[K" in shown and "teacher_sft" in shown and "3/4" in shown
    assert shown.endswith("finished in 0 s\n")
    assert shown.rstrip("\n").split("\r\x1b[K")[-1].startswith("  [1] train-teacher")
    logged = (tmp_path / "run.log").read_text()
    assert MARKER not in logged
    assert logged.count("teacher_sft") == 1 and "4/4" in logged  # only the final state (< 10 s)
    assert "    [KFP Executor] step output" in logged


# ---- against kfp.local ---------------------------------------------------------------------------------


@dsl.component(base_image="python:3.11", packages_to_install=[], install_kfp_package=False)
def count_up(n: int) -> int:
    from otdistill.progress import progress_bar

    print(f"counting from {n}")
    for _ in progress_bar(range(3), desc="count", unit="tick"):
        pass
    return n + 1


@dsl.component(base_image="python:3.11", packages_to_install=[], install_kfp_package=False)
def explode(n: int) -> int:
    print("about to fail")
    raise ValueError(f"n={n} is not allowed here")


@dsl.pipeline(name="console-check")
def failing_dag(n: int = 1) -> None:
    """Like the otdistill DAG: every step inside an exit handler (kfp.local's enhanced orchestrator)."""
    closing = count_up(n=0).set_display_name("close").set_caching_options(False)
    with dsl.ExitHandler(closing):
        first = count_up(n=n).set_display_name("count-up")
        failed = explode(n=first.output).set_display_name("explode")
        count_up(n=failed.output).set_display_name("after")


def test_steps_are_counted_through_an_exit_handler(tmp_path: Path) -> None:
    console = RunConsole(io.StringIO(), tmp_path / "x.log")
    console.expect_steps(failing_dag)
    assert console.total == 4
    assert set(console.names.values()) == {"close", "count-up", "explode", "after", "exit-handler-1"}


def _run(tmp_path: Path, run_id: str) -> tuple[list[str], Path, StepFailedError]:
    """Run `failing_dag` through the console; its terminal lines, its log and the failure it raised."""
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path / "kfp"),
        raise_on_error=True,
        enable_caching=True,
        cache_root=str(tmp_path / "kfp-cache"),
    )
    terminal = io.StringIO()
    log_path = tmp_path / "logs" / f"{run_id}.log"
    state = (
        sys.stdout,
        sys.stderr,
        logging.getLogger().handlers[:],
        {k: os.environ.get(k) for k in STEP_ENV},
    )
    with (
        pytest.raises(StepFailedError) as failed,
        run_console(log_path, run_id, terminal=terminal) as console,
    ):
        console.expect_steps(failing_dag)
        failing_dag()
    after = (
        sys.stdout,
        sys.stderr,
        logging.getLogger().handlers[:],
        {k: os.environ.get(k) for k in STEP_ENV},
    )
    assert after == state  # streams, logging and environment are as they were
    return terminal.getvalue().splitlines(), log_path, failed.value


def test_kfp_local_run_shows_step_lines_cache_hits_and_the_failing_step(tmp_path: Path) -> None:
    lines, log_path, failure = _run(tmp_path, "run-1")
    shown = "\n".join(lines)
    assert lines[0] == f"otdistill run run-1: step logs in {log_path}"
    assert lines[1] == "  [1/4] count-up              started"
    assert re.fullmatch(r"  \[1/4\] count-up              finished in \d+ s", lines[2])
    assert lines[3] == "  [2/4] explode               started"
    assert re.fullmatch(r"  \[2/4\] explode               FAILED after \d+ s", lines[4])
    assert lines[5].strip() == "ValueError: n=2 is not allowed here"
    assert lines[6].strip() == f"(everything it printed: {log_path})"
    assert lines[7] == "  [3/4] after                 skipped (explode failed)"
    assert lines[8] == "  [4/4] close                 started"  # the exit handler runs all the same
    assert re.fullmatch(r"  \[4/4\] close                 finished in \d+ s", lines[9])
    assert len(lines) == 10  # no executor JSON, no traceback frames, no kfp.local banners
    assert "executor_input" not in shown and "{" not in shown
    assert failure.step == "explode" and failure.log_path == log_path
    assert (
        str(failure) == f"step explode failed: ValueError: n=2 is not allowed here (full output: {log_path})"
    )
    logged = log_path.read_text()
    assert "Got executor_input" in logged and '"parameterValues"' in logged
    assert "counting from 1" in logged and "count: 100%" in logged and MARKER not in logged
    assert "about to fail" in logged and "Traceback (most recent call last)" in logged
    assert "otdistill: step explode FAILED" in logged

    lines, _, failure = _run(tmp_path, "run-2")  # count-up is a cache hit now
    assert lines[1] == "  [1/4] count-up              cached"
    assert lines[2] == "  [2/4] explode               started"
    assert lines[6] == "  [3/4] after                 skipped (explode failed)"
    assert failure.step == "explode"


def test_otdistill_run_exits_1_naming_the_failed_step_its_error_and_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import otdistill.pipelines.local as local_run
    from otdistill import cli

    log_path = tmp_path / "logs" / "local-1.log"

    def failing_run(*args: object, **kwargs: object) -> None:
        raise StepFailedError("train-teacher", ["ValueError: bad rows"], "ValueError: bad rows", log_path)

    monkeypatch.setattr(local_run, "run_local", failing_run)
    config = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"
    assert cli.main(["run", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "step train-teacher failed: ValueError: bad rows" in err and str(log_path) in err
