"""taskiq with taskiq-redis's list broker; results in its Redis result backend.

Worker: ``taskiq worker -w 2``, two processes with asyncio inside.
"""

from __future__ import annotations

import asyncio
from typing import Any

from common import (
    BROKER_URL,
    QUEUE,
    RESULT_URL,
    console_script,
    fill_async,
    mark,
    round_trips_async,
)
from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend

MODES = {"processes": "`taskiq worker -w 2`, `ListQueueBroker`"}
RESULTS = "`RedisAsyncResultBackend`, `task.wait_result(check_interval=0.001)`"
DISTRIBUTION = "taskiq"
BATCH = None

broker = ListQueueBroker(BROKER_URL, queue_name=QUEUE)
if RESULT_URL:
    broker = broker.with_result_backend(RedisAsyncResultBackend(RESULT_URL))


@broker.task
async def noop() -> None:
    """Do nothing: the drain measures the queue, not the work."""


@broker.task
async def marker(name: str) -> None:
    """Record when the drain reached this point."""
    mark(name)


@broker.task
async def echo(value: Any) -> Any:
    """Return the value: one round trip."""
    return value


def worker_command(mode: str) -> list[str]:
    """``taskiq worker`` with two processes, logging warnings only."""
    command = [console_script("taskiq"), "worker", "taskiq_peer:broker", "-w", "2"]
    return [*command, "--log-level", "WARNING"]


async def _fill(count: int) -> float:
    await broker.startup()
    try:
        return await fill_async(noop.kiq, marker.kiq, count)
    finally:
        await broker.shutdown()


def run_fill(count: int) -> float:
    """Queue the drain and return the enqueue rate."""
    return asyncio.run(_fill(count))


async def _round_trips(samples: int) -> list[float]:
    await broker.startup()

    async def call(value: int) -> Any:
        task = await echo.kiq(value)
        return await task.wait_result(check_interval=0.001, timeout=60)

    try:
        return await round_trips_async(call, samples)
    finally:
        await broker.shutdown()


def run_round_trips(samples: int) -> list[float]:
    """Send ``echo`` and poll for its result, one task at a time."""
    return asyncio.run(_round_trips(samples))
