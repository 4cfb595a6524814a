"""Huey on Redis; results in Redis with ``notify_result`` so a waiting client is woken.

Worker: ``huey_consumer -k process -w 2``.

Workflows: Huey's own ``group(...).then(body)`` chord (a counter and one result key per
member in Redis) and a ``.then()`` pipeline. ``Task.then`` walks the pipeline
recursively and a pipeline is pickled nested, so 1,000 links exceed Python's default
recursion limit: this module raises it.
"""

from __future__ import annotations

import sys
from typing import Any

import huey
from common import (
    BROKER_URL,
    RESULT_URL,
    chord_sum,
    console_script,
    fill,
    mark,
    round_trips,
    timed_workflow,
)
from huey.exceptions import ResultTimeout

MODES = {"processes": "`huey_consumer -k process -w 2`"}
RESULTS = "Redis storage with `notify_result=True`, `result.get(blocking=True)`"
DISTRIBUTION = "huey"
BATCH = None
CHORD = "`group([add.s(i, i) ...]).then(tsum)`"
CHAIN = "`add.s(0, 1).then(add, 1)...`, recursion limit raised to 20,000"

sys.setrecursionlimit(20_000)
queue = huey.RedisHuey("bench", url=BROKER_URL, results=bool(RESULT_URL), notify_result=True)


@queue.task()
def noop() -> None:
    """Do nothing: the drain measures the queue, not the work."""


@queue.task()
def marker(name: str) -> None:
    """Record when the drain reached this point."""
    mark(name)


@queue.task()
def echo(value: Any) -> Any:
    """Return the value: one round trip."""
    return value


@queue.task()
def add(first: int, second: int) -> int:
    """One step of a workflow."""
    return first + second


@queue.task()
def tsum(numbers: list[int]) -> int:
    """The chord's body: the sum of the header's results."""
    return sum(numbers)


def worker_command(mode: str) -> list[str]:
    """``huey_consumer`` with two worker processes, logging warnings only."""
    return [console_script("huey_consumer"), "huey_peer.queue", "-k", "process", "-w", "2", "-q"]


def run_fill(count: int) -> float:
    """Queue the drain and return the enqueue rate."""
    return fill(noop, marker, count)


def run_round_trips(samples: int) -> list[float]:
    """Call ``echo`` and block on its result, one task at a time."""
    return round_trips(lambda value: echo(value).get(blocking=True, timeout=60), samples)


def run_chord(size: int, timeout: float) -> float:
    """Seconds until the body of a chord of ``size`` additions has returned their sum."""

    def start() -> Any:
        result = queue.enqueue(huey.group([add.s(i, i) for i in range(size)]).then(tsum))
        return lambda left: result.get(blocking=True, timeout=left)

    return timed_workflow(start, chord_sum(size), timeout, (ResultTimeout,))


def run_chain(length: int, timeout: float) -> float:
    """Seconds until the last of ``length`` chained additions has returned ``length``."""

    def start() -> Any:
        pipe = add.s(0, 1)
        for _ in range(length - 1):
            pipe = pipe.then(add, 1)
        *_, last = queue.enqueue(pipe)
        return lambda left: last.get(blocking=True, timeout=left)

    return timed_workflow(start, length, timeout, (ResultTimeout,))
