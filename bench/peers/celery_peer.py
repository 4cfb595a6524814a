"""Celery, the reference: every figure in the table is also given as a ratio to it.

Worker: ``celery worker -P prefork -c 2`` with Celery's defaults (prefetch multiplier 4,
JSON). Results: Celery's Redis result backend, configured only for the round trip.
"""

from __future__ import annotations

from typing import Any

import celery
from common import BROKER_URL, QUEUE, RESULT_URL, console_script, fill, mark, round_trips

MODES = {"prefork": "`celery worker -P prefork -c 2`, prefetch multiplier 4 (default)"}
RESULTS = "Redis result backend, `AsyncResult.get()`"
DISTRIBUTION = "celery"
BATCH = None

app = celery.Celery("celery_peer", broker=BROKER_URL, backend=RESULT_URL)
app.conf.update(task_default_queue=QUEUE, broker_connection_retry_on_startup=True)


@app.task(ignore_result=True)
def noop() -> None:
    """Do nothing: the drain measures the queue, not the work."""


@app.task(ignore_result=True)
def marker(name: str) -> None:
    """Record when the drain reached this point."""
    mark(name)


@app.task
def echo(value: Any) -> Any:
    """Return the value: one round trip."""
    return value


def worker_command(mode: str) -> list[str]:
    """``celery worker`` in prefork mode with two children."""
    command = [console_script("celery"), "-A", "celery_peer", "worker", "-Q", QUEUE]
    return [*command, "-P", "prefork", "-c", "2", "-l", "warning"]


def run_fill(count: int) -> float:
    """Queue the drain and return the enqueue rate."""
    return fill(noop.delay, marker.delay, count)


def run_round_trips(samples: int) -> list[float]:
    """Call ``echo`` and wait on its AsyncResult, one call at a time."""
    return round_trips(lambda value: echo.delay(value).get(timeout=60), samples)
