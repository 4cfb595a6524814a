"""The app the fault tests run a real worker of: tasks that record each run in a file.

Read from the environment: ``FAULTPROJ_BROKER``, ``FAULTPROJ_BACKEND``,
``FAULTPROJ_TRANSPORT_OPTIONS`` and ``FAULTPROJ_BACKEND_OPTIONS`` (JSON),
``FAULTPROJ_MAX_DELIVERIES`` and ``FAULTPROJ_RUNS``,
the folder where every process appends the ids of the tasks it ran, with the time, to a
file of its own,
so a test can count runs, losses and duplicates after any crash.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from celeriac import Celeriac, Task

app = Celeriac(
    "faultproj",
    broker=os.environ["FAULTPROJ_BROKER"],
    backend=os.environ.get("FAULTPROJ_BACKEND") or None,
)
app.conf.task_acks_late = True
app.conf.broker_transport_options = json.loads(os.environ.get("FAULTPROJ_TRANSPORT_OPTIONS", "{}"))
app.conf.result_backend_transport_options = json.loads(
    os.environ.get("FAULTPROJ_BACKEND_OPTIONS", "{}")
)
app.conf.task_max_deliveries = int(os.environ.get("FAULTPROJ_MAX_DELIVERIES", "10"))


def record_run(task_id: str | None) -> None:
    """Append ``task_id`` and the time to this process's run file before the task goes on."""
    runs = Path(os.environ["FAULTPROJ_RUNS"])
    with (runs / f"{os.getpid()}.runs").open("a") as sink:
        sink.write(f"{task_id} {time.time()}\n")


@app.task(bind=True)
def record(self: Task[..., int], number: int) -> int:
    record_run(self.request.id)
    return number


@app.task(bind=True, reject_on_worker_lost=True)
def poison(self: Task[..., None]) -> None:
    record_run(self.request.id)
    os._exit(1)


@app.task(bind=True)
def hold(self: Task[..., None], seconds: float) -> None:
    """Record the run, then stay in the task for ``seconds``: a task to kill a process in."""
    record_run(self.request.id)
    time.sleep(seconds)


@app.task(bind=True, reject_on_worker_lost=True)
def hold_requeued(self: Task[..., None], seconds: float) -> None:
    """``hold``, given back to the broker (and run again) if its process is lost."""
    record_run(self.request.id)
    time.sleep(seconds)


@app.task(bind=True, rate_limit="10/s")
def limited(self: Task[..., int], number: int) -> int:
    """``record`` limited to 10 starts a second, across the fleet where the broker allows."""
    record_run(self.request.id)
    return number
