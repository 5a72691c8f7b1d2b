"""Set environment variables for the duration of a block, then put back exactly what was there.

For settings that libraries read from the environment at each use (MLflow's credentials, the step
console's switches): the process's environment changes only inside the block, also when it raises.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping


@contextlib.contextmanager
def environment(values: Mapping[str, str | None]) -> Iterator[None]:
    """Each name set to its value (None: removed) inside the block; afterwards each name has its old value,
    or is absent again if it was absent."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old
