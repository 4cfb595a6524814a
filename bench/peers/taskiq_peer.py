"""taskiq with taskiq-redis's list broker; results in its Redis result backend.

Worker: ``taskiq worker -w 2``, two processes with asyncio inside.

Workflows come from taskiq-pipelines, taskiq's own extra package (its
``PipelineMiddleware`` on the broker): the chain is ``call_next`` steps; the chord is a
first step that returns ``range(n)`` as a list, a ``map`` step that queues ``double(i)``
for each item and a waiter task that polls their results every 0.5 s (the default),
then a ``call_next`` step that sums the list. The client polls for the final result
every 10 ms.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from common import (
    BROKER_URL,
    QUEUE,
    RESULT_URL,
    chord_sum,
    console_script,
    fill_async,
    mark,
    round_trips_async,
    timed_workflow_async,
)
from taskiq import AsyncTaskiqTask
from taskiq.exceptions import TaskiqResultTimeoutError
from taskiq_pipelines import Pipeline, PipelineMiddleware
from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend

MODES = {"processes": "`taskiq worker -w 2`, `ListQueueBroker`"}
RESULTS = "`RedisAsyncResultBackend`, `task.wait_result(check_interval=0.001)`"
DISTRIBUTION = "taskiq"
BATCH = None
CHORD = (
    "taskiq-pipelines: `Pipeline(broker, numbers).map(double).call_next(tsum)` "
    "(the map's waiter polls every 0.5 s)"
)
CHAIN = "taskiq-pipelines: `Pipeline(broker, add).call_next(add, second=1)...`"
WORKFLOW_POLL = 0.01

broker = ListQueueBroker(BROKER_URL, queue_name=QUEUE)
if RESULT_URL:
    broker = broker.with_result_backend(RedisAsyncResultBackend(RESULT_URL))
    broker.add_middlewares(PipelineMiddleware())


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


@broker.task
async def add(first: int, second: int) -> int:
    """One step of a workflow."""
    return first + second


@broker.task
async def numbers(size: int) -> list[int]:
    """The chord's first step: the items its map step fans out."""
    return list(range(size))


@broker.task
async def double(value: int) -> int:
    """A chord header task: ``add(i, i)`` in the one-argument form a map step calls."""
    return value + value


@broker.task
async def tsum(values: list[int]) -> int:
    """The chord's body: the sum of the header's results."""
    return sum(values)


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


def _waiter(task: AsyncTaskiqTask[Any]) -> Callable[[float], Awaitable[Any]]:
    """Wait for the pipeline's last step and return its value (raising its error)."""

    async def wait(left: float) -> Any:
        result = await task.wait_result(check_interval=WORKFLOW_POLL, timeout=left)
        result.raise_for_error()
        return result.return_value

    return wait


async def _workflow(
    pipe: Callable[[], Pipeline[Any, Any]], args: tuple[int, ...], expected: int, timeout: float
) -> float:
    await broker.startup()

    async def start() -> Callable[[float], Awaitable[Any]]:
        return _waiter(await pipe().kiq(*args))

    try:
        return await timed_workflow_async(start, expected, timeout, (TaskiqResultTimeoutError,))
    finally:
        await broker.shutdown()


def run_chord(size: int, timeout: float) -> float:
    """Seconds until the sum of a map of ``size`` doubles has come out of the pipeline."""

    def pipe() -> Pipeline[Any, Any]:
        return Pipeline(broker, numbers).map(double).call_next(tsum)

    return asyncio.run(_workflow(pipe, (size,), chord_sum(size), timeout))


def run_chain(length: int, timeout: float) -> float:
    """Seconds until the last of ``length`` pipelined additions has returned ``length``."""

    def pipe() -> Pipeline[Any, Any]:
        chain: Pipeline[Any, Any] = Pipeline(broker, add)
        for _ in range(length - 1):
            chain = chain.call_next(add, second=1)
        return chain

    return asyncio.run(_workflow(pipe, (0, 1), length, timeout))
