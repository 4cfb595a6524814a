"""Tasks for the bench: a no-op, and a marker whose result says the queue is drained."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from celeriac import Celeriac
from celeriac.signals import worker_ready

app = Celeriac("bench_tasks")


@app.task(ignore_result=True)
def noop() -> None:
    """Do nothing: measures the queue, not the work."""


@app.task
def echo(value: Any) -> Any:
    """Return the value: measures a round trip."""
    return value


@worker_ready.connect
def note_ready(sender: Any = None, **kwargs: Any) -> None:
    """Write the moment the worker is ready, for the drain measurement."""
    path = os.environ.get("BENCH_READY_FILE")
    if path:
        Path(path).write_text(repr(time.time()))
