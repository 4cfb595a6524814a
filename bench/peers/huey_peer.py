"""Huey on Redis; results in Redis with ``notify_result`` so a waiting client is woken.

Worker: ``huey_consumer -k process -w 2``.
"""

from __future__ import annotations

from typing import Any

import huey
from common import BROKER_URL, RESULT_URL, console_script, fill, mark, round_trips

MODES = {"processes": "`huey_consumer -k process -w 2`"}
RESULTS = "Redis storage with `notify_result=True`, `result.get(blocking=True)`"
DISTRIBUTION = "huey"
BATCH = None

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


def worker_command(mode: str) -> list[str]:
    """``huey_consumer`` with two worker processes, logging warnings only."""
    return [console_script("huey_consumer"), "huey_peer.queue", "-k", "process", "-w", "2", "-q"]


def run_fill(count: int) -> float:
    """Queue the drain and return the enqueue rate."""
    return fill(noop, marker, count)


def run_round_trips(samples: int) -> list[float]:
    """Call ``echo`` and block on its result, one task at a time."""
    return round_trips(lambda value: echo(value).get(blocking=True, timeout=60), samples)
