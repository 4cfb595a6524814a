"""Rate-limit start slots kept in the broker, on every transport (``SharedStartSlots``).

Redis and SQLite keep them, so every worker of a fleet books from one sequence; the others
keep none and leave each worker to space its own starts.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator

import pytest

from celeriac.transports.base import SharedStartSlots, StartBooking, Transport
from tests.conftest import BrokerUnderTest

# Round trips and clocks: how far a delay may be from the exact multiple of the interval.
SLACK = 0.05


@pytest.fixture
def slots(transport: Transport) -> SharedStartSlots:
    """The transport, on the brokers that keep shared start slots."""
    if not isinstance(transport, SharedStartSlots):
        pytest.skip(f"{type(transport).__name__} keeps no shared slots: limits hold per worker")
    return transport


@pytest.fixture
def second(broker_under_test: BrokerUnderTest) -> Iterator[Transport]:
    """Another connection to the same broker, as another worker would have."""
    opened = broker_under_test.connect()
    yield opened
    opened.close()


def test_only_redis_and_sqlite_keep_shared_slots(transport: Transport) -> None:
    scheme = transport.url.partition(":")[0]

    is_shared = isinstance(transport, SharedStartSlots)

    assert is_shared == (scheme in {"redis", "sqlite"})


def test_slots_of_one_booking_are_one_interval_apart(slots: SharedStartSlots) -> None:
    [delays] = slots.book_starts([StartBooking("tasks.add", 0.5, 3)])

    assert delays[0] == pytest.approx(0.0, abs=SLACK)
    assert delays[1] == pytest.approx(0.5, abs=SLACK)
    assert delays[2] == pytest.approx(1.0, abs=SLACK)


def test_a_later_booking_continues_after_the_slots_already_booked(slots: SharedStartSlots) -> None:
    slots.book_starts([StartBooking("tasks.add", 0.5, 2)])

    [delays] = slots.book_starts([StartBooking("tasks.add", 0.5, 1)])

    assert delays == [pytest.approx(1.0, abs=SLACK)]


def test_two_connections_share_the_slots(slots: SharedStartSlots, second: SharedStartSlots) -> None:
    [first_delays] = slots.book_starts([StartBooking("tasks.add", 0.5, 2)])

    [second_delays] = second.book_starts([StartBooking("tasks.add", 0.5, 2)])

    assert first_delays == [pytest.approx(0.0, abs=SLACK), pytest.approx(0.5, abs=SLACK)]
    assert second_delays == [pytest.approx(1.0, abs=SLACK), pytest.approx(1.5, abs=SLACK)]


def test_one_call_books_several_task_types_each_on_its_own(slots: SharedStartSlots) -> None:
    slots.book_starts([StartBooking("tasks.add", 1.0, 5)])

    add, mul = slots.book_starts(
        [StartBooking("tasks.add", 1.0, 1), StartBooking("tasks.mul", 1.0, 2)]
    )

    assert add == [pytest.approx(5.0, abs=SLACK)]
    assert mul == [pytest.approx(0.0, abs=SLACK), pytest.approx(1.0, abs=SLACK)]


def test_slots_that_have_passed_are_not_kept(slots: SharedStartSlots) -> None:
    slots.book_starts([StartBooking("tasks.add", 0.05, 2)])
    time.sleep(0.2)

    [delays] = slots.book_starts([StartBooking("tasks.add", 0.05, 1)])

    assert delays == [pytest.approx(0.0, abs=SLACK)]


def test_a_new_rate_is_not_held_back_by_slots_of_the_old_one(slots: SharedStartSlots) -> None:
    slots.book_starts([StartBooking("tasks.add", 60.0, 10)])

    [delays] = slots.book_starts([StartBooking("tasks.add", 0.5, 3)])

    assert delays == [pytest.approx(value, abs=SLACK) for value in (0.5, 1.0, 1.5)]


def test_no_two_of_many_concurrent_bookers_get_the_same_slot(
    broker_under_test: BrokerUnderTest, slots: SharedStartSlots
) -> None:
    interval, bookers, each = 1.0, 4, 5
    starts: list[float] = []
    lock = threading.Lock()

    def book() -> None:
        transport = broker_under_test.connect()
        try:
            assert isinstance(transport, SharedStartSlots)
            for _ in range(each):
                [[delay]] = transport.book_starts([StartBooking("tasks.add", interval, 1)])
                with lock:
                    starts.append(time.time() + delay)
        finally:
            transport.close()

    threads = [threading.Thread(target=book) for _ in range(bookers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    starts.sort()
    assert len(starts) == bookers * each
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert min(gaps) > interval - SLACK
