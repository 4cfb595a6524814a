"""RQ: plain functions queued on Redis; a job's result is kept in Redis beside it.

Worker: ``rq worker-pool -n 2``, two workers that each fork a work horse per job (RQ's
default ``Worker``). Without results the jobs are sent with ``result_ttl=0``, RQ's way
of not keeping them.

Workflows are built from job dependencies, RQ's only primitive for them: the chain is
jobs each ``depends_on`` the one before, the chord a job with ``Dependency(jobs=...)``
on the whole header (queued with ``enqueue_many``). RQ does not hand a dependency's
result to its dependent, so the dependent fetches it (``Job.fetch_many``,
``return_value()``).
"""

from __future__ import annotations

import time
from typing import Any

import rq
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
from redis import Redis
from rq.job import Dependency, Job

MODES = {"pool": "`rq worker-pool -n 2` (fork per job, the default worker class)"}
RESULTS = "results kept in Redis, `job.latest_result(timeout=...)`"
DISTRIBUTION = "rq"
BATCH = "`Queue.enqueue_many`, 100 jobs a call"
BATCH_SIZE = 100
CHORD = (
    "header by `enqueue_many`, body `enqueue(tsum, depends_on=Dependency(jobs=header))` "
    "fetching the header's results"
)
CHAIN = "jobs each `depends_on` the previous one, fetching its result"

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


def add(first: int, second: int) -> int:
    """One step of a workflow."""
    return first + second


def add_to_previous(second: int) -> int:
    """A chain link: the result of the job this one depends on, plus ``second``."""
    previous = rq.get_current_job().dependency
    assert previous is not None
    return int(previous.return_value()) + second


def tsum() -> int:
    """The chord's body: the sum of the results of the jobs this one depends on."""
    job = rq.get_current_job()
    header = Job.fetch_many(job.dependency_ids, connection=job.connection)
    return sum(int(member.return_value()) for member in header if member is not None)


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


def _result_of(job: Job, left: float) -> Any:
    """The job's return value, waiting up to ``left`` seconds; None when none came.

    The wait blocks a second at a time: a longer block can outlast the read timeout of
    the Redis connection.
    """
    deadline = time.monotonic() + left
    while deadline - time.monotonic() > 0:
        result = job.latest_result(timeout=1)
        if result is not None:
            return result.return_value
    return None


def run_chord(size: int, timeout: float) -> float:
    """Seconds until a job depending on ``size`` additions has returned their sum."""

    def start() -> Any:
        header = queue.enqueue_many([rq.Queue.prepare_data(add, (i, i)) for i in range(size)])
        body = queue.enqueue(tsum, depends_on=Dependency(jobs=header))
        return lambda left: _result_of(body, left)

    return timed_workflow(start, chord_sum(size), timeout)


def run_chain(length: int, timeout: float) -> float:
    """Seconds until the last of ``length`` dependent additions has returned ``length``."""

    def start() -> Any:
        job = queue.enqueue(add, 0, 1)
        for _ in range(length - 1):
            job = queue.enqueue(add_to_previous, 1, depends_on=job)
        return lambda left: _result_of(job, left)

    return timed_workflow(start, length, timeout)
