"""What every adapter shares: its settings from the environment and the drain markers.

The driver (``bench/run.py``) sets ``BENCH_BROKER_URL``, ``BENCH_MARKER_URL`` and, only for
the round trip and the workflows, ``BENCH_RESULT_URL``; an adapter reads them when it is
imported, in the client and in its worker alike. The drain is timed between two marker
tasks that write the moment they run to Redis: one before the no-ops, one after them.
The workflows (a chord, a chain) are timed from building them until the final result is
in the client's hands, and that result is checked.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis

BROKER_URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/15")
MARKER_URL = os.environ.get("BENCH_MARKER_URL", "redis://127.0.0.1:6379/15")
RESULT_URL = os.environ.get("BENCH_RESULT_URL") or None
QUEUE = "bench"
MARKER_PREFIX = "bench:mark:"
START, END = "start", "end"

_markers: redis.Redis | None = None


def mark(name: str) -> None:
    """Record that the marker task ``name`` ran now (the body of every adapter's marker task)."""
    global _markers
    if _markers is None:
        _markers = redis.Redis.from_url(MARKER_URL)
    _markers.set(MARKER_PREFIX + name, repr(time.time()))


def warmup_of(count: int) -> int:
    """How many of ``count`` sends warm the client up before the clock starts."""
    return min(200, count // 10)


def fill(
    send_noop: Callable[[], object], send_marker: Callable[[str], object], count: int
) -> float:
    """Queue the start marker, ``count`` no-ops one at a time, the end marker; return sends/s.

    The first few no-ops warm the client up and are not timed.
    """
    warmup = warmup_of(count)
    send_marker(START)
    for _ in range(warmup):
        send_noop()
    started = time.perf_counter()
    for _ in range(count - warmup):
        send_noop()
    elapsed = time.perf_counter() - started
    send_marker(END)
    return (count - warmup) / elapsed


async def fill_async(
    send_noop: Callable[[], Awaitable[object]],
    send_marker: Callable[[str], Awaitable[object]],
    count: int,
) -> float:
    """``fill`` for clients whose sends are coroutines, awaited one at a time."""
    warmup = warmup_of(count)
    await send_marker(START)
    for _ in range(warmup):
        await send_noop()
    started = time.perf_counter()
    for _ in range(count - warmup):
        await send_noop()
    elapsed = time.perf_counter() - started
    await asyncio.sleep(0.005)
    await send_marker(END)
    return (count - warmup) / elapsed


def round_trips(call: Callable[[int], object], samples: int, warmup: int = 20) -> list[float]:
    """Milliseconds of ``call(i)`` (send one task and wait for its result), one at a time."""
    for index in range(warmup):
        call(index)
    timings = []
    for index in range(samples):
        started = time.perf_counter()
        call(index)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


async def round_trips_async(
    call: Callable[[int], Awaitable[object]], samples: int, warmup: int = 20
) -> list[float]:
    """``round_trips`` for clients whose calls are coroutines."""
    for index in range(warmup):
        await call(index)
    timings = []
    for index in range(samples):
        started = time.perf_counter()
        await call(index)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def chord_sum(size: int) -> int:
    """What the chord's body returns: the sum of ``add(i, i)`` for ``i`` below ``size``."""
    return size * (size - 1)


def timed_workflow(
    start: Callable[[], Callable[[float], Any]],
    expected: Any,
    timeout: float,
    timeouts: tuple[type[BaseException], ...] = (),
) -> float:
    """Seconds from ``start()`` (build and send) until its waiter returns the final result.

    The waiter gets the seconds left of ``timeout``; the system's own timeout errors
    (``timeouts``) and a waiter that returns ``None`` become ``TimeoutError``. A wrong
    result is an error, not a figure.
    """
    started = time.perf_counter()
    wait = start()
    left = timeout - (time.perf_counter() - started)
    if left <= 0:
        raise TimeoutError(f"sending alone took more than {timeout:g} s")
    try:
        value = wait(left)
    except timeouts as error:
        raise TimeoutError(str(error)) from error
    elapsed = time.perf_counter() - started
    if value is None:
        raise TimeoutError(f"no result within {timeout:g} s")
    if value != expected:
        raise RuntimeError(f"the workflow returned {value!r}, expected {expected!r}")
    return elapsed


async def timed_workflow_async(
    start: Callable[[], Awaitable[Callable[[float], Awaitable[Any]]]],
    expected: Any,
    timeout: float,
    timeouts: tuple[type[BaseException], ...] = (),
) -> float:
    """``timed_workflow`` for clients whose sends and waits are coroutines."""
    started = time.perf_counter()
    wait = await start()
    left = timeout - (time.perf_counter() - started)
    if left <= 0:
        raise TimeoutError(f"sending alone took more than {timeout:g} s")
    try:
        value = await wait(left)
    except timeouts as error:
        raise TimeoutError(str(error)) from error
    elapsed = time.perf_counter() - started
    if value != expected:
        raise RuntimeError(f"the workflow returned {value!r}, expected {expected!r}")
    return elapsed


def console_script(name: str) -> str:
    """Path of an installed command in the bench's own environment."""
    return str(Path(sys.executable).parent / name)
