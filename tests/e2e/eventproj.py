"""A tasks module for the event-stream tests: one task for each way a task can end.

Like ``sigproj`` it notes ``worker_ready`` in the file named by SIGNAL_LOG, which is how
the ``start_worker`` fixture knows the worker is ready.
"""

from __future__ import annotations

import json
import os
from typing import Any

from celeriac import Celeriac
from celeriac.exceptions import Reject
from celeriac.signals import worker_ready

app = Celeriac(
    "eventproj",
    broker=os.environ["SIGPROJ_BROKER"],
    backend=os.environ.get("SIGPROJ_BACKEND") or None,
)
app.conf.broker_transport_options = json.loads(os.environ.get("SIGPROJ_TRANSPORT_OPTIONS") or "{}")


@worker_ready.connect
def note_ready(sender: Any = None, **kwargs: Any) -> None:
    with open(os.environ["SIGNAL_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps({"signal": "worker_ready", "pid": os.getpid()}) + "\n")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def boom(message: str) -> None:
    raise ValueError(message)


@app.task(bind=True, max_retries=1, default_retry_delay=0.1)
def flaky(self: Any) -> str:
    if self.request.retries < 1:
        raise self.retry(exc=KeyError("again"))
    return "recovered"


@app.task(bind=True)
def progress(self: Any, total: int) -> int:
    self.send_event("task-progress", done=total, total=total)
    return total


@app.task
def refuse() -> None:
    raise Reject("not for us", requeue=False)
