"""RQ: plain functions queued on Redis; a job's result is kept in Redis beside it.

Worker: ``rq worker-pool -n 2``, two workers that each fork a work horse per job (RQ's
default ``Worker``). Without results the jobs are sent with ``result_ttl=0``, RQ's way
of not keeping them.
"""

from __future__ import annotations

import time
from typing import Any

import rq
from common import BROKER_URL, QUEUE, RESULT_URL, console_script, fill, mark, round_trips
from redis import Redis

MODES = {"pool": "`rq worker-pool -n 2` (fork per job, the default worker class)"}
RESULTS = "results kept in Redis, `job.latest_result(timeout=...)`"
DISTRIBUTION = "rq"
BATCH = "`Queue.enqueue_many`, 100 jobs a call"
BATCH_SIZE = 100

queue = rq.Queue(QUEUE, connection=Redis.from_url(BROKER_URL))
_job_options: dict[str, Any] = {} if RESULT_URL else {"result_ttl": 0}


def noop() -> None:
    """Do nothing: the drain measures the queue, not the work."""


def marker(name: str) -> None:
    """Record when the drain reached this point."""
    mark(name)


def echo(value: Any) -> Any:
    """Return the value: one round trip."""
    return value


def worker_command(mode: str) -> list[str]:
    """``rq worker-pool`` with two workers."""
    command = [console_script("rq"), "worker-pool", "-u", BROKER_URL, "-n", "2"]
    return [*command, "-l", "WARNING", QUEUE]


def run_fill(count: int) -> float:
    """Queue the drain and return the enqueue rate."""
    return fill(
        lambda: queue.enqueue(noop, **_job_options),
        lambda name: queue.enqueue(marker, name, **_job_options),
        count,
    )


def run_fill_batch(count: int) -> float:
    """Jobs per second queued ``BATCH_SIZE`` at a time with ``enqueue_many``."""

    def send(size: int) -> None:
        queue.enqueue_many([rq.Queue.prepare_data(noop, **_job_options) for _ in range(size)])

    send(BATCH_SIZE)
    started = time.perf_counter()
    for first in range(0, count, BATCH_SIZE):
        send(min(BATCH_SIZE, count - first))
    return count / (time.perf_counter() - started)


def run_round_trips(samples: int) -> list[float]:
    """Queue ``echo`` and block on its latest result, one job at a time."""
    return round_trips(lambda value: queue.enqueue(echo, value).latest_result(timeout=60), samples)
