"""What a person sees of a local run (`otdistill run`): one line per step, live progress bars, the error.

kfp.local prints a lot: every step's executor input (the whole run config, as JSON), its streamed output,
its outputs, rulers. All of it, and anything else this process or its steps print while the pipeline runs,
goes to one log file per run (``<run dir>/logs/<pipeline run id>.log``). The terminal gets:

    otdistill run local-20261129-223118-fa212d03: step logs in runs/quickstart/logs/local-...log
      [1/8] open-run               finished in 31 s
      [2/8] prepare-data           cached
      [3/8] train-teacher          0:42  train_teacher  62%|######2   | 5/8 [00:40<00:24, loss=2.31]

On a terminal the line of the running step is redrawn in place (elapsed time, the step's current progress
bar) and becomes its "finished in N s" line. Elsewhere (a file, CI) each step that runs prints a "started"
and a "finished" line and bars are not shown. A failed step prints the end of its error (the exception
line of its traceback) and the log path; the steps kfp.local then skips are listed as skipped, an exit
handler still runs, and `run_console` raises `StepFailedError` with the failed step's facts.

How the output is caught: kfp.local re-prints each step's output from this process with Python's `print`
(the SubprocessRunner reads the child's stdout pipe, the DockerRunner the container's log stream), and logs
through the root logger on `sys.stdout`. While the run is on, `sys.stdout` / `sys.stderr` are a stream that
writes the log file and recognises progress events (`otdistill.progress`), the root logger's handlers write
there too, and file descriptors 1 and 2 point at the log file, so output that bypasses Python's streams (a
C library, a handler bound to the old `sys.stderr`) lands in the log as well. Step starts, ends and cache
hits are taken from kfp.local's task executor (`execute_single_task`, and `run_single_task_implementation`
for a step that actually runs), which every runner goes through; that is the one kfp.local internal relied
on (kfp 2.17), checked by the tests.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shutil
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from otdistill.environment import environment
from otdistill.progress import LINES, PROGRESS_ENV, parse_event

# Set for the steps while a run is on: progress events instead of tqdm refreshes, unbuffered output (the
# log shows a step's lines as they happen, in order). A DockerRunner must pass them into its containers.
STEP_ENV = {PROGRESS_ENV: LINES, "PYTHONUNBUFFERED": "1"}
LOG_BAR_INTERVAL_S = 10.0  # a bar's state goes to the log at most this often (and once when it is done)
REDRAW_INTERVAL_S = 0.1
TICK_S = 1.0
ERROR_LINES = 12
TAIL_LINES = 400
NAME_WIDTH = 21  # register-and-promote, and a space
KFP_INDENT = "    "  # kfp.local indents a step's streamed output by four spaces
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_RULER = re.compile(r"^\s*-{20,}\s*$")  # kfp.local's separator between tasks
_KFP_LOG = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} - [A-Z]+ - ")  # kfp.local's own log lines (not the step's)
# kfp.local's enhanced orchestrator (exit handlers, conditions) logs the steps it skips after a failure.
_SKIPPED = re.compile(r"Skipping task (\S+): upstream task\(s\) \[(.*)\] failed")


class StepFailedError(RuntimeError):
    """A pipeline step failed; the message names it, gives its error and the log with the whole output."""

    def __init__(self, step: str, error: list[str], headline: str, log_path: Path):
        self.step = step
        self.error = error
        self.log_path = log_path
        super().__init__(f"step {step} failed: {headline} (full output: {log_path})")


def error_excerpt(lines: list[str], limit: int = ERROR_LINES) -> tuple[list[str], str]:
    """The error at the end of a step's output, and its one-line headline: the exception of the last traceback
    (its first line is the headline), else the last lines (the last one is)."""
    lines = [_ANSI.sub("", line).rstrip() for line in lines]
    lines = [line for line in lines if line.strip() and not _RULER.match(line)]
    start = max(
        (i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")),
        default=None,
    )
    if start is not None:
        body = lines[start + 1 :]
        i = 0
        while i < len(body) and body[i][0].isspace():
            i += 1  # the frames: '  File ...', their source lines and carets
        if body[i:]:
            return body[i:][:limit], body[i]
    tail = lines[-limit:]
    return tail, tail[-1] if tail else "no output (see the log)"


@dataclass
class _Bar:
    """The latest state of one progress bar of the running step."""

    event: dict[str, Any]
    logged_at: float
    received_at: float

    def meter(self, width: int | None, ascii_only: bool, *, live: bool = False) -> str:
        """The bar as tqdm draws it: filling `width` when it all fits, else a short bar and the text cut at
        `width` (the postfix of a training bar is long); `width` None: a short bar, nothing cut. `live`: the
        elapsed time runs on from the event's (a training step can take minutes between events)."""
        elapsed = float(self.event.get("elapsed") or 0.0)
        if live:
            elapsed += time.monotonic() - self.received_at
        full = self._format(None, ascii_only, elapsed)
        if width is None:
            return full
        return self._format(width, ascii_only, elapsed) if len(full) <= width else full[:width]

    def _format(self, ncols: int | None, ascii_only: bool, elapsed: float) -> str:
        e = self.event
        try:
            return str(
                tqdm.format_meter(
                    n=e.get("n") or 0,
                    total=e.get("total"),
                    elapsed=elapsed,
                    ncols=ncols,
                    prefix=str(e.get("desc") or ""),
                    ascii=True if ascii_only else None,
                    unit=str(e.get("unit") or "it"),
                    unit_scale=e.get("unit_scale") or False,
                    rate=e.get("rate"),
                    postfix=e.get("postfix") or None,
                    unit_divisor=e.get("unit_divisor") or 1000,
                )
            )
        except (TypeError, ValueError, ZeroDivisionError):
            return f"{e.get('desc', '')} {e.get('n')}/{e.get('total')}"


@dataclass
class _Step:
    index: int
    name: str
    started: float
    ran: bool = False  # kfp.local executed it (not a cache hit)


class RunConsole:
    """The terminal side and the log side of one local run (see the module docstring).

    terminal: where step lines go (a terminal gets the live line). log_path: the run's log file.
    """

    def __init__(self, terminal: TextIO, log_path: Path, *, tty: bool | None = None):
        self.terminal = terminal
        self.log_path = log_path
        self.tty = _is_tty(terminal) if tty is None else tty
        encoding = (getattr(terminal, "encoding", None) or "").lower().replace("-", "")
        self.ascii_only = encoding != "utf8"
        self.total: int | None = None
        self.names: dict[str, str] = {}  # kfp task name -> the step's display name
        self.loop_items: set[str] = set()  # the DAG inputs that hold a dsl.ParallelFor iteration's item
        self.failed: tuple[str, list[str], str] | None = None  # step, error lines, headline
        self._log: TextIO | None = None
        self._lock = threading.RLock()
        self._partial = ""
        self._count = 0
        self._step: _Step | None = None
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._bars: dict[str, _Bar] = {}
        self._live_shown = False
        self._drawn_at = 0.0

    # ---- set-up -------------------------------------------------------------------------------------------
    def open(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "a", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115

    def close(self) -> None:
        with self._lock:
            if self._partial:
                self._line(self._partial)
                self._partial = ""
            self._clear_live()
            if self._log is not None:
                self._log.close()
                self._log = None

    def expect_steps(self, pipeline: Any) -> None:
        """Number the step lines: `pipeline` is the kfp pipeline (its compiled spec lists the tasks, those
        inside an exit handler's sub-DAG included)."""
        try:
            spec = pipeline.pipeline_spec
            self.total = _count_tasks(spec.root.dag, spec.components, self.names, self.loop_items)
        except AttributeError:
            self.total = None

    # ---- what the run writes --------------------------------------------------------------------------
    def feed(self, text: str) -> None:
        """Text written to stdout / stderr during the run (any pieces; lines are put together here)."""
        with self._lock:
            self._partial += text
            if "\n" not in self._partial:
                return
            *lines, self._partial = self._partial.split("\n")
            for line in lines:
                self._line(line)

    def _line(self, line: str) -> None:
        event = parse_event(line)
        if event is not None:
            self._progress(event)
            return
        self._write_log(line)
        skipped = _SKIPPED.search(line)
        if skipped:
            upstream = [self.names.get(n, n) for n in re.findall(r"'([^']+)'", skipped[2])]
            self.step_skipped(self.names.get(skipped[1], skipped[1]), upstream)
            return
        if self._step is not None and not _KFP_LOG.match(line):
            self._tail.append(line.removeprefix(KFP_INDENT))

    def _write_log(self, line: str) -> None:
        if self._log is not None:
            with contextlib.suppress(OSError, ValueError):
                self._log.write(_ANSI.sub("", line) + "\n")

    def note(self, message: str) -> None:
        """A line of this console's own in the log (step starts and ends), so the log reads on its own."""
        self._write_log(f"{time.strftime('%H:%M:%S')} otdistill: {message}")

    # ---- progress bars ------------------------------------------------------------------------------------
    def _progress(self, event: dict[str, Any]) -> None:
        now = time.monotonic()
        key = str(event["id"])
        bar = self._bars.get(key)
        if bar is None:
            bar = self._bars[key] = _Bar(event, logged_at=now, received_at=now)
        bar.event, bar.received_at = event, now
        if event.get("done"):
            self._bars.pop(key, None)
        if event.get("done") or now - bar.logged_at >= LOG_BAR_INTERVAL_S:
            bar.logged_at = now
            self._write_log(KFP_INDENT + bar.meter(None, ascii_only=True))
        if self.tty and now - self._drawn_at >= REDRAW_INTERVAL_S:
            self._draw_live()

    # ---- the terminal -----------------------------------------------------------------------------------
    def _label(self, step: _Step) -> str:
        number = f"{step.index}/{self.total}" if self.total else str(step.index)
        return f"  [{number}] {step.name:<{NAME_WIDTH}}"

    def _say(self, text: str) -> None:
        """A finished line on the terminal (replacing the live line, if one is drawn)."""
        self._clear_live()
        try:
            self.terminal.write(text + "\n")
            self.terminal.flush()
        except (OSError, ValueError):
            pass

    def _width(self) -> int:
        try:
            columns = os.get_terminal_size(self.terminal.fileno()).columns
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            columns = 0
        return max(columns or shutil.get_terminal_size((100, 24)).columns, 40)

    def _draw_live(self) -> None:
        step = self._step
        if step is None or not step.ran:
            return
        width = self._width() - 1
        elapsed = time.monotonic() - step.started
        head = f"{self._label(step)} {int(elapsed) // 60}:{int(elapsed) % 60:02d}  "
        bar = next(reversed(self._bars.values()), None)
        tail = bar.meter(width - len(head), self.ascii_only, live=True) if bar is not None else "running"
        text = (head + tail)[:width]
        try:
            self.terminal.write("\r\x1b[K" + text)
            self.terminal.flush()
        except (OSError, ValueError):
            return
        self._live_shown = True
        self._drawn_at = time.monotonic()

    def _clear_live(self) -> None:
        if self._live_shown:
            with contextlib.suppress(OSError, ValueError):
                self.terminal.write("\r\x1b[K")
            self._live_shown = False

    def tick(self) -> None:
        """Redraw the live line (the elapsed time moves on without any output from the step)."""
        with self._lock:
            if self._live_shown:
                self._draw_live()

    def header(self, run_id: str) -> None:
        with self._lock:
            self.note(f"local run {run_id}")
            self._say(f"otdistill run {run_id}: step logs in {_display_path(self.log_path)}")

    # ---- step events (from the kfp.local hooks) -------------------------------------------------------
    def step_begin(self, name: str) -> None:
        with self._lock:
            self._count += 1
            self._step = _Step(self._count, name, time.monotonic())
            self._tail.clear()
            self._bars.clear()

    def step_runs(self) -> None:
        with self._lock:
            step = self._step
            if step is None or step.ran:
                return
            step.ran = True
            step.started = time.monotonic()
            self._tail.clear()  # from here on: the step's own output
            self.note(f"step {step.name} started")
            if self.tty:
                self._draw_live()  # redrawn in place, then replaced by the step's "finished" line
            else:
                self._say(f"{self._label(step)} started")

    def step_skipped(self, name: str, upstream: list[str]) -> None:
        """kfp.local skips `name`: a step it needs (`upstream`) failed."""
        with self._lock:
            self._count += 1
            step = _Step(self._count, name, time.monotonic())
            because = f" ({', '.join(upstream)} failed)" if upstream else ""
            self.note(f"step {name} skipped{because}")
            self._say(f"{self._label(step)} skipped{because}")

    def step_end(self, ok: bool, *, interrupted: bool = False) -> None:
        with self._lock:
            step, self._step = self._step, None
            if step is None:
                return
            seconds = time.monotonic() - step.started
            self._bars.clear()
            if ok and not step.ran:
                self.note(f"step {step.name} cached")
                self._say(f"{self._label(step)} cached")
            elif ok:
                self.note(f"step {step.name} finished in {seconds:.0f} s")
                self._say(f"{self._label(step)} finished in {seconds:.0f} s")
            elif interrupted:
                self.note(f"step {step.name} interrupted after {seconds:.0f} s")
                self._say(f"{self._label(step)} interrupted after {seconds:.0f} s")
            else:
                error, headline = error_excerpt(list(self._tail))
                if self.failed is None:  # the first failure is the run's (an exit handler may fail after it)
                    self.failed = (step.name, error, headline)
                self.note(f"step {step.name} FAILED after {seconds:.0f} s")
                self._say(f"{self._label(step)} FAILED after {seconds:.0f} s")
                pad = " " * (len(self._label(step)) + 1)
                for line in error:
                    self._say(f"{pad}{line}")
                self._say(f"{pad}(everything it printed: {_display_path(self.log_path)})")


def _count_tasks(dag: Any, components: Any, names: dict[str, str], loop_items: set[str]) -> int:
    """The container tasks of a compiled DAG, counting through sub-DAGs (exit handlers, conditions) and each
    iteration of a `dsl.ParallelFor` over a compile-time list; records each task's display name in `names`
    and the inputs that hold a loop's item in `loop_items`."""
    total = 0
    for key, task in dag.tasks.items():
        names[key] = task.task_info.name or key
        component = components[task.component_ref.name]
        count = _count_tasks(component.dag, components, names, loop_items) if component.HasField("dag") else 1
        if task.WhichOneof("iterator") == "parameter_iterator":
            loop_items.add(task.parameter_iterator.item_input)
            raw = task.parameter_iterator.items.raw
            count *= len(json.loads(raw)) if raw else 1
        total += count
    return total


def loop_row(io_store: Any, loop_items: set[str]) -> str:
    """The `row` field of the `dsl.ParallelFor` item a task runs for ("" outside a loop): kfp.local runs
    every iteration's tasks under their one display name, and a sweep's items name their row (uld-s0)."""
    for key in loop_items:
        try:
            item = io_store.get_parent_input(key)
        except (ValueError, KeyError, AttributeError):
            continue
        if isinstance(item, dict) and item.get("row"):
            return str(item["row"])
    return ""


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, OSError, ValueError):
        return False


def _display_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class _CaptureStream(io.TextIOBase):
    """`sys.stdout` / `sys.stderr` during a run: text goes to the console (log file, progress events)."""

    def __init__(self, console: RunConsole, name: str):
        self._console = console
        self._name = name

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def name(self) -> str:
        return self._name

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        self._console.feed(str(text))
        return len(text)

    def flush(self) -> None:
        pass


# ---- kfp.local hooks ---------------------------------------------------------------------------------
@contextlib.contextmanager
def _kfp_hooks(console: RunConsole) -> Iterator[None]:
    """Report step starts / ends / cache hits from kfp.local's task executor (every runner uses it)."""
    from kfp.local import status, task_dispatcher
    from kfp.local.orchestrator import task_executor

    execute = task_executor.execute_single_task
    dispatch = task_dispatcher.run_single_task_implementation

    def execute_single_task(*args: Any, **kwargs: Any) -> Any:
        task_spec = kwargs.get("task_spec")
        name = str(kwargs.get("task_name") or (args[0] if args else "step"))
        display = getattr(getattr(task_spec, "task_info", None), "name", "") or name
        row = loop_row(kwargs.get("io_store"), console.loop_items)
        console.step_begin(f"{display}-{row}" if row else display)
        try:
            outputs, task_status = execute(*args, **kwargs)
        except KeyboardInterrupt:
            console.step_end(False, interrupted=True)
            raise
        except BaseException:
            console.step_end(False)
            raise
        console.step_end(task_status == status.Status.SUCCESS)
        return outputs, task_status

    def run_single_task_implementation(*args: Any, **kwargs: Any) -> Any:
        console.step_runs()
        return dispatch(*args, **kwargs)

    task_executor.execute_single_task = execute_single_task
    task_dispatcher.run_single_task_implementation = run_single_task_implementation
    try:
        yield
    finally:
        task_executor.execute_single_task = execute
        task_dispatcher.run_single_task_implementation = dispatch


# ---- output capture ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def _captured_output(console: RunConsole) -> Iterator[None]:
    """Python's streams, the root logger and file descriptors 1 / 2 write to the console's log."""
    assert console._log is not None
    stream = _CaptureStream(console, "<otdistill run log>")
    saved_streams = (sys.stdout, sys.stderr)
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    for s in saved_streams:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            s.flush()
    saved_fds: dict[int, int] = {}
    for fd in (1, 2):
        try:
            saved_fds[fd] = os.dup(fd)
            os.dup2(console._log.fileno(), fd)
        except OSError:
            saved_fds.pop(fd, None)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers[:] = [handler]
    if root.level > logging.INFO:
        root.setLevel(logging.INFO)
    sys.stdout = sys.stderr = stream
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved_streams
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        for s in (sys.__stdout__, sys.__stderr__, *saved_streams):
            with contextlib.suppress(OSError, ValueError, AttributeError):
                s.flush()  # type: ignore[union-attr]
        for fd, saved in saved_fds.items():
            os.dup2(saved, fd)
            os.close(saved)


def _step_environment() -> contextlib.AbstractContextManager[None]:
    return environment(STEP_ENV)


def _terminal_for(terminal: TextIO | None) -> tuple[TextIO, Callable[[], None]]:
    """The stream for step lines: a copy of fd 1 / 2 when `terminal` writes there (they are redirected)."""
    term = terminal if terminal is not None else sys.stdout
    try:
        fd = term.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return term, lambda: None
    if fd not in (1, 2):
        return term, lambda: None
    term.flush()
    encoding = getattr(term, "encoding", None) or "utf-8"
    copy = open(os.dup(fd), "w", buffering=1, encoding=encoding, errors="replace")  # noqa: SIM115
    return copy, copy.close


@contextlib.contextmanager
def run_console(
    log_path: Path, run_id: str, *, terminal: TextIO | None = None, tty: bool | None = None
) -> Iterator[RunConsole]:
    """Show the run in `run_id`'s `with` block as step lines on `terminal` (default: stdout), everything else
    in `log_path`; a failed step raises `StepFailedError`."""
    term, close_term = _terminal_for(terminal)
    console = RunConsole(term, log_path, tty=tty)
    console.open()
    stop = threading.Event()
    ticker = threading.Thread(target=_tick, args=(console, stop), name="otdistill-console", daemon=True)
    try:
        console.header(run_id)
        with _step_environment(), _captured_output(console), _kfp_hooks(console):
            if console.tty:
                ticker.start()
            try:
                yield console
            except RuntimeError as exc:
                if console.failed is None:
                    raise
                step, error, headline = console.failed
                raise StepFailedError(step, error, headline, log_path) from exc
    finally:
        stop.set()
        if ticker.is_alive():
            ticker.join(timeout=2)
        console.close()
        close_term()


def _tick(console: RunConsole, stop: threading.Event) -> None:
    while not stop.wait(TICK_S):
        console.tick()
