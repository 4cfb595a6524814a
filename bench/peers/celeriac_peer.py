"""celeriac, in prefork and thread-pool mode, on Redis or RabbitMQ.

The batch enqueue goes through ``Transport.publish_many``: celeriac has no public
task-level batch call (``apply_async`` publishes one message), so the bench builds the
same protocol-2 messages ``apply_async`` would and hands them to the transport in chunks.
The workflows are celeriac's canvas, written as they would be for Celery.
"""

from __future__ import annotations

import sys
import time
import uuid
from typing import Any

from common import (
    BROKER_URL,
    QUEUE,
    RESULT_URL,
    chord_sum,
    fill,
    mark,
    round_trips,
    timed_workflow,
)

from celeriac import Celeriac, chain, chord
from celeriac.protocol.message import build_task_message
from celeriac.transports import SCHEMES
from celeriac.transports.base import OutgoingMessage

MODES = {
    "prefork": "`celeriac worker -P prefork -c 2`",
    "prefork-events": "`celeriac worker -P prefork -c 2 -E` (task events on)",
    "threads": "`celeriac worker -P threads -c 4` (one process)",
}
RESULTS = "Redis result backend, `AsyncResult.get()`"
DISTRIBUTION = "celeriac"
BATCH = "`transport.publish_many`, 100 messages a call (no public task-level batch API)"
BATCH_SIZE = 100
CHORD = "`chord(add.s(i, i) ...)(tsum.s())`, Redis backend"
CHAIN = "`chain(add.s(0, 1), add.s(1), ...)`"
CONCURRENCY = {"prefork": "2", "prefork-events": "2", "threads": "4"}

app = Celeriac("celeriac_peer", broker=BROKER_URL, backend=RESULT_URL, task_default_queue=QUEUE)


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


def unavailable() -> str | None:
    """Why this broker cannot be benched yet, or None."""
    scheme = BROKER_URL.partition("://")[0]
    if scheme not in SCHEMES:
        return f"celeriac has no {scheme}:// transport yet (celeriac.transports.SCHEMES)"
    return None


def worker_command(mode: str) -> list[str]:
    """``celeriac worker`` with the pool ``mode`` (``<pool>-events``: with ``-E``)."""
    command = [sys.executable, "-m", "celeriac", "-A", "celeriac_peer", "worker", "-Q", QUEUE]
    pool, _, events = mode.partition("-")
    options = ["-E"] if events else []
    return [*command, "-P", pool, "-c", CONCURRENCY[mode], "-l", "warning", *options]


def run_fill(count: int) -> float:
    """Queue the drain and return the enqueue rate."""
    return fill(noop.delay, marker.delay, count)


def _noop_message() -> OutgoingMessage:
    envelope = build_task_message(
        noop.name,
        str(uuid.uuid4()),
        [],
        {},
        origin=app.origin,
        ignore_result=True,
        reply_to=app.oid,
        routing_key=QUEUE,
    )
    return OutgoingMessage(QUEUE, envelope)


def run_fill_batch(count: int) -> float:
    """Messages per second put on the broker ``BATCH_SIZE`` at a time, building included."""
    transport = app.transport
    transport.publish_many([_noop_message() for _ in range(BATCH_SIZE)])
    started = time.perf_counter()
    for first in range(0, count, BATCH_SIZE):
        size = min(BATCH_SIZE, count - first)
        transport.publish_many([_noop_message() for _ in range(size)])
    return count / (time.perf_counter() - started)


def run_round_trips(samples: int) -> list[float]:
    """Call ``echo`` and wait on its AsyncResult, one call at a time."""
    return round_trips(lambda value: echo.delay(value).get(timeout=60), samples)


def run_chord(size: int, timeout: float) -> float:
    """Seconds until the body of a chord of ``size`` additions has returned their sum."""

    def start() -> Any:
        result = chord(add.s(i, i) for i in range(size))(tsum.s())
        return lambda left: result.get(timeout=left)

    return timed_workflow(start, chord_sum(size), timeout)


def run_chain(length: int, timeout: float) -> float:
    """Seconds until the last of ``length`` chained additions has returned ``length``."""

    def start() -> Any:
        result = chain(add.s(0, 1), *[add.s(1) for _ in range(length - 1)])()
        return lambda left: result.get(timeout=left)

    return timed_workflow(start, length, timeout)
