"""The tasks module of the canvas end-to-end tests (``celeriac -A canvasproj worker``).

It reads its broker and result store from the variables ``conftest.Broker.env`` sets,
and writes one ``worker_ready`` line to the file named by SIGNAL_LOG, which is how the
test fixtures know the worker is up. Tasks that must leave a trace the test process can
read (errbacks, which have no result of their own to wait on) store it with
``update_state`` under an id derived from the task they are about, as a SUCCESS the test
waits for with ``AsyncResult(...).get(timeout=...)``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from celeriac import Celeriac, group
from celeriac.signals import worker_ready

app = Celeriac(
    "canvasproj",
    broker=os.environ["SIGPROJ_BROKER"],
    backend=os.environ.get("SIGPROJ_BACKEND") or None,
)
app.conf.broker_transport_options = json.loads(os.environ.get("SIGPROJ_TRANSPORT_OPTIONS") or "{}")
app.conf.result_backend_transport_options = json.loads(
    os.environ.get("SIGPROJ_BACKEND_OPTIONS") or "{}"
)

MARKER_WAIT = 20.0


@worker_ready.connect
def announce_ready(sender: Any = None, **kwargs: Any) -> None:
    """Tell the fixture that started this worker that it consumes now."""
    path = os.environ.get("SIGNAL_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(json.dumps({"signal": "worker_ready", "pid": os.getpid()}) + "\n")


def errback_record_id(task_id: str, style: str) -> str:
    """The id under which an errback of ``style`` ("new"/"old") records the failed task."""
    return f"{task_id}-errback-{style}"


# ---- plain tasks ---------------------------------------------------------------------


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def mul(x: int, y: int) -> int:
    return x * y


@app.task
def tsum(numbers: list[int]) -> int:
    return sum(numbers)


@app.task
def collect(values: list[Any]) -> list[Any]:
    """A chord body that returns the header's results as it got them."""
    return values


@app.task
def args_of(*args: Any) -> list[Any]:
    """Return the arguments it was called with: what a chain hop received."""
    return list(args)


@app.task
def delayed(value: int, seconds: float) -> int:
    """Return ``value`` after ``seconds``: members that finish out of order."""
    time.sleep(seconds)
    return value


@app.task
def fail(message: str) -> None:
    raise ValueError(message)


@app.task
def fail_on(x: int, bad: int) -> int:
    """Return ``x``, or fail when it equals ``bad``: one failing member in a header."""
    if x == bad:
        raise ValueError(f"bad member {x}")
    return x


@app.task(bind=True)
def request_fields(self: Any, *ignored: Any) -> dict[str, Any]:
    """The canvas fields of the message this task came in (parent's result ignored)."""
    request = self.request
    return {
        "id": request.id,
        "root_id": request.root_id,
        "parent_id": request.parent_id,
        "group": request.group,
        "group_index": request.group_index,
    }


# ---- errbacks ------------------------------------------------------------------------


@app.task
def on_error_new(request: Any, exc: BaseException, traceback: Any) -> None:
    """A new-style errback: called with the failed task's request, exception, traceback."""
    on_error_new.update_state(
        task_id=errback_record_id(request.id, "new"),
        state="SUCCESS",
        meta={
            "task_id": request.id,
            "exc_type": type(exc).__name__,
            "exc": str(exc),
            "traceback_type": type(traceback).__name__,
        },
    )


@app.task
def on_error_old(task_id: str) -> str:
    """An old-style errback: sent as a task of its own with the failed task's id."""
    on_error_old.update_state(
        task_id=errback_record_id(task_id, "old"), state="SUCCESS", meta={"task_id": task_id}
    )
    return task_id


# ---- tasks that use the canvas from inside ------------------------------------------


@app.task(bind=True)
def replace_with_chain(self: Any, x: int) -> Any:
    """Become ``(x + 10) * 2``, computed by a chain of two other tasks."""
    return self.replace(add.s(x, 10) | mul.s(2))


@app.task(bind=True)
def replace_with_group(self: Any, x: int) -> Any:
    """Become ``[x, x + 1, x + 2]``, computed by a group."""
    return self.replace(group(add.s(x, i) for i in range(3)))


@app.task(bind=True)
def grow_chord(self: Any, x: int, extra: int) -> int:
    """Add ``extra`` tasks ``add(x, i)`` to the chord this task is a header member of."""
    for i in range(extra):
        self.add_to_chord(add.s(x, i))
    return x


@app.task(bind=True)
def progress(self: Any, marker: str) -> str:
    """Report PROGRESS, then wait (bounded) until the test creates ``marker``."""
    self.update_state(state="PROGRESS", meta={"current": 1, "total": 2})
    deadline = time.monotonic() + MARKER_WAIT
    while not Path(marker).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{marker} was never created")
        time.sleep(0.02)
    return "done"


@app.task
def wait_inside(x: int, allowed: bool) -> int:
    """Send ``add(x, 1)`` and wait for it here, which a worker refuses unless ``allowed``."""
    return add.delay(x, 1).get(timeout=10, disable_sync_subtasks=not allowed)
