"""Dramatiq on its Redis broker; results through its Results middleware and Redis backend.

Worker: ``dramatiq --processes 2`` with its default eight threads a process.
"""

from __future__ import annotations

from typing import Any

import dramatiq
from common import BROKER_URL, QUEUE, RESULT_URL, console_script, fill, mark, round_trips
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends.redis import RedisBackend

MODES = {"processes": "`dramatiq --processes 2`, 8 threads each (default)"}
RESULTS = "Results middleware, Redis backend, `message.get_result(block=True)`"
DISTRIBUTION = "dramatiq"
BATCH = None

broker = RedisBroker(url=BROKER_URL)
if RESULT_URL:
    broker.add_middleware(Results(backend=RedisBackend(url=RESULT_URL)))
dramatiq.set_broker(broker)
_result_options: dict[str, Any] = {"store_results": True} if RESULT_URL else {}


@dramatiq.actor(queue_name=QUEUE)
def noop() -> None:
    """Do nothing: the drain measures the queue, not the work."""


@dramatiq.actor(queue_name=QUEUE)
def marker(name: str) -> None:
    """Record when the drain reached this point."""
    mark(name)


@dramatiq.actor(queue_name=QUEUE, **_result_options)
def echo(value: Any) -> Any:
    """Return the value: one round trip."""
    return value


def worker_command(mode: str) -> list[str]:
    """``dramatiq`` with two worker processes."""
    return [console_script("dramatiq"), "dramatiq_peer", "--processes", "2", "--queues", QUEUE]


def run_fill(count: int) -> float:
    """Queue the drain and return the enqueue rate."""
    return fill(noop.send, marker.send, count)


def run_round_trips(samples: int) -> list[float]:
    """Send ``echo`` and block on its result, one message at a time."""
    return round_trips(
        lambda value: echo.send(value).get_result(block=True, timeout=60_000), samples
    )
