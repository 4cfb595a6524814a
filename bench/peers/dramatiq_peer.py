"""Dramatiq on its Redis broker; results through its Results middleware and Redis backend.

Worker: ``dramatiq --processes 2`` with its default eight threads a process.

Workflows: the chain is a ``pipeline`` (each link's result is appended to the next one's
arguments); the chord is a ``group`` with a completion callback (the GroupCallbacks
middleware, its barrier in Redis), which Dramatiq calls with no results, so its body
only counts. A pipeline nests every message in the one before it, and 1,000 levels of
that exceed Python's default recursion limit in ``json.dumps``: this module raises it.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import dramatiq
from common import (
    BROKER_URL,
    QUEUE,
    RESULT_URL,
    console_script,
    fill,
    mark,
    round_trips,
    timed_workflow,
)
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware.group_callbacks import GroupCallbacks
from dramatiq.rate_limits.backends.redis import RedisBackend as BarrierBackend
from dramatiq.results import Results, ResultTimeout
from dramatiq.results.backends.redis import RedisBackend

MODES = {"processes": "`dramatiq --processes 2`, 8 threads each (default)"}
RESULTS = "Results middleware, Redis backend, `message.get_result(block=True)`"
DISTRIBUTION = "dramatiq"
BATCH = None
CHORD = (
    "`group([add.message(i, i) ...]).add_completion_callback(done.message(n))`; "
    "the callback gets no results, so the body only returns `n`"
)
CHAIN = "`pipeline([add.message(0, 1), add.message(1), ...])`, recursion limit raised to 20,000"

sys.setrecursionlimit(20_000)
broker = RedisBroker(url=BROKER_URL)
if RESULT_URL:
    broker.add_middleware(Results(backend=RedisBackend(url=RESULT_URL)))
    broker.add_middleware(GroupCallbacks(BarrierBackend(url=RESULT_URL)))
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


@dramatiq.actor(queue_name=QUEUE, **_result_options)
def add(first: int, second: int) -> int:
    """One step of a workflow."""
    return first + second


@dramatiq.actor(queue_name=QUEUE, **_result_options)
def done(size: int) -> int:
    """The chord's completion callback: Dramatiq hands it no results, so it returns the size."""
    return size


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


def run_chord(size: int, timeout: float) -> float:
    """Seconds until the completion callback of a group of ``size`` additions has returned."""

    def start() -> Any:
        callback = done.message(size)
        group = dramatiq.group(add.message(i, i) for i in range(size))
        group.add_completion_callback(callback)
        group.run()
        return lambda left: _result_of(callback, left)

    return timed_workflow(start, size, timeout)


def run_chain(length: int, timeout: float) -> float:
    """Seconds until the last of a pipeline of ``length`` additions has returned ``length``."""

    def start() -> Any:
        links = [add.message(0, 1), *(add.message(1) for _ in range(length - 1))]
        pipe = dramatiq.pipeline(links).run()
        return lambda left: _result_of(pipe, left)

    return timed_workflow(start, length, timeout)


def _result_of(message: Any, left: float) -> Any:
    """The message's (or pipeline's) result, waiting up to ``left`` seconds; None if none.

    The wait blocks a second at a time: a longer block can outlast the read timeout of
    the Redis connection.
    """
    deadline = time.monotonic() + left
    while deadline - time.monotonic() > 0:
        try:
            return message.get_result(block=True, timeout=1000)
        except ResultTimeout:
            continue
    return None
