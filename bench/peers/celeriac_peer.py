"""celeriac, in prefork and thread-pool mode, on Redis or RabbitMQ.

The batch enqueue goes through ``Transport.publish_many``: celeriac has no public
task-level batch call (``apply_async`` publishes one message), so the bench builds the
same protocol-2 messages ``apply_async`` would and hands them to the transport in chunks.
"""

from __future__ import annotations

import sys
import time
import uuid
from typing import Any

from common import BROKER_URL, QUEUE, RESULT_URL, fill, mark, round_trips

from celeriac import Celeriac
from celeriac.protocol.message import build_task_message
from celeriac.transports import SCHEMES
from celeriac.transports.base import OutgoingMessage

MODES = {
    "prefork": "`celeriac worker -P prefork -c 2`",
    "threads": "`celeriac worker -P threads -c 4` (one process)",
}
RESULTS = "Redis result backend, `AsyncResult.get()`"
DISTRIBUTION = "celeriac"
BATCH = "`transport.publish_many`, 100 messages a call (no public task-level batch API)"
BATCH_SIZE = 100
CONCURRENCY = {"prefork": "2", "threads": "4"}

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


def unavailable() -> str | None:
    """Why this broker cannot be benched yet, or None."""
    scheme = BROKER_URL.partition("://")[0]
    if scheme not in SCHEMES:
        return f"celeriac has no {scheme}:// transport yet (celeriac.transports.SCHEMES)"
    return None


def worker_command(mode: str) -> list[str]:
    """``celeriac worker`` with the pool ``mode``."""
    command = [sys.executable, "-m", "celeriac", "-A", "celeriac_peer", "worker", "-Q", QUEUE]
    return [*command, "-P", mode, "-c", CONCURRENCY[mode], "-l", "warning"]


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
