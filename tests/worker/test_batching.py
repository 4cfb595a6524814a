"""The Batcher: flush by count, by delay, on stop, and through a failing flush."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator

import pytest

from celeriac.worker.batching import Batcher


class Batches:
    """A flush function that records each batch and can fail on chosen calls."""

    def __init__(self, failing_calls: tuple[int, ...] = ()) -> None:
        self.received: queue.SimpleQueue[list[int]] = queue.SimpleQueue()
        self.calls = 0
        self.failing_calls = failing_calls

    def __call__(self, batch: list[int]) -> None:
        self.calls += 1
        if self.calls in self.failing_calls:
            raise ConnectionError("broker went away")
        self.received.put(batch)

    def next(self, timeout: float = 5.0) -> list[int]:
        return self.received.get(timeout=timeout)

    def all_received(self) -> list[list[int]]:
        batches = []
        while not self.received.empty():
            batches.append(self.received.get())
        return batches


@pytest.fixture
def batches() -> Batches:
    return Batches()


@pytest.fixture
def started() -> Iterator[list[Batcher[int]]]:
    batchers: list[Batcher[int]] = []
    yield batchers
    for batcher in batchers:
        batcher.stop()


def start_batcher(
    started: list[Batcher[int]], flush: Batches, *, max_items: int, max_delay: float
) -> Batcher[int]:
    batcher = Batcher(flush, max_items=max_items, max_delay=max_delay)
    batcher.start()
    started.append(batcher)
    return batcher


def test_batch_is_flushed_when_max_items_are_waiting(started, batches):
    batcher = start_batcher(started, batches, max_items=3, max_delay=60)

    for item in (1, 2, 3):
        batcher.add(item)

    assert batches.next(timeout=2) == [1, 2, 3]


def test_batch_is_flushed_after_max_delay_since_the_first_item(started, batches):
    batcher = start_batcher(started, batches, max_items=100, max_delay=0.1)
    added_at = time.monotonic()

    batcher.add(1)
    batcher.add(2)
    batch = batches.next(timeout=2)

    assert batch == [1, 2]
    assert 0.08 <= time.monotonic() - added_at < 1.5


def test_stop_flushes_the_items_still_waiting(batches):
    batcher = Batcher(batches, max_items=100, max_delay=60)
    batcher.start()
    batcher.add(1)
    batcher.add(2)

    batcher.stop()

    assert batches.all_received() == [[1, 2]]


def test_items_added_after_stop_are_flushed_at_once(batches):
    batcher = Batcher(batches, max_items=100, max_delay=60)
    batcher.start()
    batcher.stop()

    batcher.add(7)

    assert batches.all_received() == [[7]]


def test_flush_now_flushes_in_the_calling_thread(started):
    flushing_threads: list[str] = []
    batcher: Batcher[int] = Batcher(
        lambda batch: flushing_threads.append(threading.current_thread().name),
        max_items=100,
        max_delay=60,
    )
    batcher.start()
    started.append(batcher)
    batcher.add(1)

    batcher.flush_now()

    assert flushing_threads == [threading.current_thread().name]


def test_failing_flush_is_logged_and_batching_continues(started, caplog):
    batches = Batches(failing_calls=(1,))
    batcher = start_batcher(started, batches, max_items=2, max_delay=60)

    with caplog.at_level(logging.ERROR, logger="celeriac.worker"):
        batcher.add(1)
        batcher.add(2)
        batcher.add(3)
        batcher.add(4)
        later_batch = batches.next(timeout=2)

    assert later_batch == [3, 4]
    assert "Flushing a batch of 2 items failed" in caplog.text
    assert "broker went away" in caplog.text


def test_batch_failing_with_a_retryable_error_is_kept_and_flushed_first_later(caplog):
    batches = Batches(failing_calls=(1, 2, 3))
    batcher = Batcher(batches, max_items=2, max_delay=0.0, retry_on=(ConnectionError,))
    batcher.start()

    with caplog.at_level(logging.INFO, logger="celeriac.worker"):
        batcher.add(1)
        batcher.add(2)
        first = batches.next(timeout=5)
        batcher.add(3)
        second = batches.next(timeout=5)
        batcher.stop()

    assert first == [1, 2]
    assert second == [3]
    assert batches.calls == 5
    assert caplog.text.count("kept to retry") == 1
    assert "Flushing works again" in caplog.text


def test_stop_retries_a_failing_batch_until_its_timeout_then_says_what_is_left(caplog):
    batches = Batches(failing_calls=tuple(range(1, 1000)))
    batcher = Batcher(batches, max_items=10, max_delay=60, retry_on=(ConnectionError,))
    batcher.start()
    batcher.add(1)
    batcher.add(2)
    started = time.monotonic()

    with caplog.at_level(logging.ERROR, logger="celeriac.worker"):
        batcher.stop(timeout=0.5)

    assert 0.45 <= time.monotonic() - started < 3
    assert batcher.pending() == [1, 2]
    assert batches.calls > 2
    assert "Gave up flushing 2 items" in caplog.text


def test_items_from_many_threads_are_each_flushed_once_in_bounded_batches(batches):
    batcher = Batcher(batches, max_items=50, max_delay=0.005)
    batcher.start()

    def add_range(start: int) -> None:
        for item in range(start, start + 500):
            batcher.add(item)

    adders = [threading.Thread(target=add_range, args=(n * 500,)) for n in range(8)]
    for adder in adders:
        adder.start()
    for adder in adders:
        adder.join(timeout=10)
    batcher.stop()

    received = batches.all_received()
    assert sorted(item for batch in received for item in batch) == list(range(4000))
    assert all(1 <= len(batch) <= 50 for batch in received)
