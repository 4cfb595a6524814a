"""Celery, the reference: every figure in the table is also given as a ratio to it.

Worker: ``celery worker -P prefork -c 2`` with Celery's defaults (prefetch multiplier 4,
JSON). Results: Celery's Redis result backend, configured only for the round trip and
the workflows: ``chord`` (the backend's native join: a counter and a list in Redis) and
``chain`` (each message carries the links still to run).
"""

from __future__ import annotations

from typing import Any

import celery
import celery.exceptions
from common import (
    BROKER_URL,
    QUEUE,
    RESULT_URL,
    chord_sum,
    console_script,
    fill,
    mark,
    round_trips,
    timed_workflow,
)

MODES = {"prefork": "`celery worker -P prefork -c 2`, prefetch multiplier 4 (default)"}
RESULTS = "Redis result backend, `AsyncResult.get()`"
DISTRIBUTION = "celery"
BATCH = None
CHORD = "`chord(add.s(i, i) ...)(tsum.s())`, Redis backend's native join"
CHAIN = "`chain(add.s(0, 1), add.s(1), ...)`"

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


@app.task
def add(first: int, second: int) -> int:
    """One step of a workflow."""
    return first + second


@app.task
def tsum(numbers: list[int]) -> int:
    """The chord's body: the sum of the header's results."""
    return sum(numbers)


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


def run_chord(size: int, timeout: float) -> float:
    """Seconds until the body of a chord of ``size`` additions has returned its sum."""

    def start() -> Any:
        result = celery.chord(add.s(i, i) for i in range(size))(tsum.s())
        return lambda left: result.get(timeout=left)

    return timed_workflow(start, chord_sum(size), timeout, (celery.exceptions.TimeoutError,))


def run_chain(length: int, timeout: float) -> float:
    """Seconds until the last of ``length`` chained additions has returned ``length``."""

    def start() -> Any:
        result = celery.chain(add.s(0, 1), *[add.s(1) for _ in range(length - 1)])()
        return lambda left: result.get(timeout=left)

    return timed_workflow(start, length, timeout, (celery.exceptions.TimeoutError,))
