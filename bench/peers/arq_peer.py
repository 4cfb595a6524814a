"""arq: asyncio jobs in a Redis sorted set, one worker process.

arq has no multi-process mode; its worker runs up to ``max_jobs`` (10) jobs at once in
one event loop. It polls the queue every ``poll_delay`` (0.5 s by default, which caps a
drain at about 200 jobs/s), so the bench sets 10 ms, and the client polls for a result
every millisecond. Results are kept only for the round trip (``keep_result``). arq has
neither chords nor chains (nor job dependencies), so it has no workflow figures.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import arq
from arq.connections import ArqRedis, RedisSettings
from common import BROKER_URL, QUEUE, RESULT_URL, fill_async, mark, round_trips_async

MODES = {"asyncio": "one process, `max_jobs=10` (default), `poll_delay=0.01` (default 0.5)"}
RESULTS = "kept in Redis (`keep_result`), `job.result(poll_delay=0.001)`"
DISTRIBUTION = "arq"
BATCH = None
CHORD = None
CHAIN = None


async def noop(ctx: dict[str, Any]) -> None:
    """Do nothing: the drain measures the queue, not the work."""


async def marker(ctx: dict[str, Any], name: str) -> None:
    """Record when the drain reached this point."""
    mark(name)


async def echo(ctx: dict[str, Any], value: Any) -> Any:
    """Return the value: one round trip."""
    return value


class WorkerSettings:
    """The worker's settings, in arq's class form."""

    functions = [noop, marker, echo]
    redis_settings = RedisSettings.from_dsn(BROKER_URL)
    queue_name = QUEUE
    poll_delay = 0.01
    keep_result = 3600 if RESULT_URL else 0


def worker_command(mode: str) -> list[str]:
    """Run this module, which starts arq's worker with warnings-only logging."""
    return [sys.executable, "-m", "arq_peer"]


async def _pool() -> ArqRedis:
    return await arq.create_pool(WorkerSettings.redis_settings, default_queue_name=QUEUE)


async def _fill(count: int) -> float:
    pool = await _pool()
    try:
        return await fill_async(
            lambda: pool.enqueue_job("noop"), lambda name: pool.enqueue_job("marker", name), count
        )
    finally:
        await pool.aclose()


def run_fill(count: int) -> float:
    """Queue the drain and return the enqueue rate."""
    return asyncio.run(_fill(count))


async def _round_trips(samples: int) -> list[float]:
    pool = await _pool()

    async def call(value: int) -> Any:
        job = await pool.enqueue_job("echo", value)
        assert job is not None
        return await job.result(timeout=60, poll_delay=0.001)

    try:
        return await round_trips_async(call, samples)
    finally:
        await pool.aclose()


def run_round_trips(samples: int) -> list[float]:
    """Enqueue ``echo`` and poll for its result, one job at a time."""
    return asyncio.run(_round_trips(samples))


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    arq.run_worker(WorkerSettings)  # type: ignore[arg-type]
