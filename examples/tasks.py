"""The demo's tasks module: a Celery-style app on the embedded default (no server).

Written as a Celery user would write it; only the import names celeriac. The signal
handlers note what the worker saw in the file named by DEMO_SIGNALS.
"""

from __future__ import annotations

import json
import os
import random
from typing import Any

from celeriac import Celery
from celeriac.signals import (
    task_failure,
    task_postrun,
    task_prerun,
    task_received,
    task_retry,
    task_revoked,
    task_success,
    worker_process_init,
    worker_ready,
    worker_shutting_down,
)

app = Celery("tasks")  # no broker_url: an SQLite file is the broker and the result store


@app.task
def add(x: int, y: int) -> int:
    """Add two numbers."""
    return x + y


@app.task
def tsum(numbers: list[int]) -> int:
    """Add up a list: the body of the demo's chord."""
    return sum(numbers)


@app.task(bind=True, max_retries=5, default_retry_delay=0.2)
def fetch_page(self: Any, url: str) -> str:
    """Fail twice, as a flaky network would, then succeed."""
    if self.request.retries < 2:
        raise self.retry(exc=ConnectionError(f"{url} timed out"))
    return f"<html>{url} after {self.request.retries} retries</html>"


@app.task
def divide(x: float, y: float) -> float:
    """Divide; dividing by zero fails with ZeroDivisionError."""
    return x / y


@app.task
def roll_dice() -> int:
    """Roll a die."""
    return random.randint(1, 6)


def _note(name: str, **fields: Any) -> None:
    path = os.environ.get("DEMO_SIGNALS")
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(json.dumps({"signal": name, "pid": os.getpid(), **fields}) + "\n")


@worker_ready.connect
def on_ready(sender: Any = None, **kwargs: Any) -> None:
    _note("worker_ready")


@worker_process_init.connect
def on_process_init(sender: Any = None, **kwargs: Any) -> None:
    _note("worker_process_init")


@worker_shutting_down.connect
def on_shutting_down(sender: Any = None, sig: Any = None, how: Any = None, **kwargs: Any) -> None:
    _note("worker_shutting_down", sig=sig, how=how)


@task_received.connect
def on_received(sender: Any = None, request: Any = None, **kwargs: Any) -> None:
    _note("task_received", task=request.name)


@task_prerun.connect
def on_prerun(sender: Any = None, task_id: Any = None, task: Any = None, **kwargs: Any) -> None:
    _note("task_prerun", task=task.name)


@task_postrun.connect
def on_postrun(sender: Any = None, task: Any = None, state: Any = None, **kwargs: Any) -> None:
    _note("task_postrun", task=task.name, state=state)


@task_success.connect
def on_success(sender: Any = None, result: Any = None, **kwargs: Any) -> None:
    _note("task_success", task=sender.name, result=repr(result))


@task_retry.connect
def on_retry(sender: Any = None, reason: Any = None, **kwargs: Any) -> None:
    _note("task_retry", task=sender.name, reason=str(reason))


@task_failure.connect
def on_failure(sender: Any = None, exception: Any = None, **kwargs: Any) -> None:
    _note("task_failure", task=sender.name, exception=repr(exception))


@task_revoked.connect
def on_revoked(sender: Any = None, expired: Any = None, **kwargs: Any) -> None:
    _note("task_revoked", task=sender.name if sender else None, expired=expired)
