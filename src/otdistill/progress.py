"""The library's progress bars (training, generation, data loading, teacher cache): tqdm, shown to suit where
the output goes.

- On a terminal: a plain tqdm bar.
- Under `otdistill run` (environment ``OTDISTILL_PROGRESS=lines``, set by `otdistill.run_console`): every
  refresh, at most every 0.5 s, is one marked line ``@@otdistill-progress {json}`` on stderr. The step's
  output goes through kfp.local to the run console, which draws the bar on the person's terminal and keeps
  only a few of its states in the run's log file.
- Anywhere else that is not a terminal (a pod log, output redirected to a file): one plain text line at most
  every 30 s and the final state, instead of a carriage-return refresh ten times a second.

`progress_bar` takes tqdm's arguments and returns a tqdm (or a subclass of it), so callers use it as tqdm.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm as std_tqdm
from tqdm.auto import tqdm as auto_tqdm

PROGRESS_ENV = "OTDISTILL_PROGRESS"
LINES = "lines"  # the value of PROGRESS_ENV that asks for marked event lines
MARKER = "@@otdistill-progress "
EVENT_INTERVAL_S = 0.5
TEXT_INTERVAL_S = 30.0

_ids = itertools.count(1)


class _Sink:
    """Where tqdm's own carriage returns and newlines go: nowhere (`_LineBar.display` writes whole lines)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


class _LineBar(std_tqdm):
    """A tqdm that writes each refresh as one whole line: a marked JSON event, or the bar as text."""

    def __init__(self, iterable: Iterable[Any] | None = None, *, events: bool, **kwargs: Any) -> None:
        self._events = events
        self._out = kwargs.pop("file", None) or sys.stderr
        self._closing = False
        self._bar_id = f"{os.getpid()}-{next(_ids)}"
        interval = EVENT_INTERVAL_S if events else TEXT_INTERVAL_S
        kwargs.setdefault("mininterval", interval)
        kwargs.setdefault("maxinterval", max(interval, float(kwargs["mininterval"])))
        super().__init__(iterable, file=_Sink(), **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if self._events:
            d = self.format_dict
            event = {
                "id": self._bar_id,
                "desc": d["prefix"] or "",
                "n": d["n"],
                "total": d["total"],
                "elapsed": round(float(d["elapsed"]), 3),
                "rate": d["rate"],
                "unit": d["unit"],
                "unit_scale": d["unit_scale"],
                "unit_divisor": d["unit_divisor"],
                "postfix": d["postfix"] or "",
                "done": self._closing,
            }
            line = MARKER + json.dumps(event, default=str)
        else:
            line = self.format_meter(**{**self.format_dict, "ncols": 100})
        try:
            self._out.write(line + "\n")
            self._out.flush()
        except (OSError, ValueError):  # a closed stream must not stop training
            pass
        return True

    def close(self) -> None:
        if not getattr(self, "disable", True):
            self._closing = True
        super().close()


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, OSError, ValueError):
        return False


def progress_bar(iterable: Iterable[Any] | None = None, **kwargs: Any) -> Any:
    """A tqdm progress bar (same arguments) that suits where its output goes (see the module docstring)."""
    if os.environ.get(PROGRESS_ENV, "").strip().lower() == LINES:
        return _LineBar(iterable, events=True, **kwargs)
    stream = kwargs.get("file") or sys.stderr
    if _is_terminal(stream) or "ipykernel" in sys.modules:
        return auto_tqdm(iterable, **kwargs)
    return _LineBar(iterable, events=False, **kwargs)


def parse_event(line: str) -> dict[str, Any] | None:
    """The progress event a line carries (see `_LineBar`), or None for any other line."""
    at = line.find(MARKER)
    if at < 0:
        return None
    try:
        event = json.loads(line[at + len(MARKER) :])
    except ValueError:
        return None
    return event if isinstance(event, dict) and "id" in event else None
