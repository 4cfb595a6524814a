"""Which messages wait for a start slot, where the slots are booked, and which rate applies."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celeriac
from celeriac.protocol.message import build_task_message, parse_task_message
from celeriac.transports.base import Delivery, StartBooking, Transport
from celeriac.transports.sqlite import SQLiteTransport
from celeriac.worker.rate_limit import RATE_SLOT_HEADER, RateLimits
from celeriac.worker.request import Request

NOW = 1_000_000.0


class CountingSlots(SQLiteTransport):
    """A real SQLite broker that counts the booking round trips made to it."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.calls: list[list[StartBooking]] = []

    def book_starts(self, bookings: Sequence[StartBooking]) -> list[list[float]]:
        self.calls.append(list(bookings))
        return super().book_starts(bookings)


@pytest.fixture
def app() -> Iterator[Celeriac]:
    app = Celeriac("rates", broker=f"memory://{uuid.uuid4().hex}")

    @app.task(name="tasks.limited", rate_limit="2/s")
    def limited() -> None: ...

    @app.task(name="tasks.free")
    def free() -> None: ...

    yield app
    app.close()


@pytest.fixture
def sqlite_slots(tmp_path: Path) -> Iterator[CountingSlots]:
    transport = CountingSlots(f"sqlite:///{tmp_path}/b.db")
    yield transport
    transport.close()


def request_for(name: str, headers: dict[str, Any] | None = None, retries: int = 0) -> Request:
    envelope = build_task_message(name, uuid.uuid4().hex, (), {}, headers=headers, retries=retries)
    return Request(Delivery(envelope, "celery", "1:1"), parse_task_message(envelope), "host")


def slot_header(at: float, rate: float, retries: int = 0) -> dict[str, Any]:
    """The header of a message put back until its slot."""
    return {RATE_SLOT_HEADER: {"at": at, "rate": rate, "retries": retries}}


def local_limits(app: Celeriac) -> RateLimits:
    return RateLimits(app, app.transport, now=lambda: NOW)


def test_starts_beyond_the_rate_are_deferred_to_their_slots(app: Celeriac) -> None:
    limits = local_limits(app)

    first, second, third = limits.deferrals([request_for("tasks.limited") for _ in range(3)])

    assert first is None
    assert second is not None
    assert second.until == NOW + 0.5
    assert second.headers == {RATE_SLOT_HEADER: {"at": NOW + 0.5, "rate": 2.0, "retries": 0}}
    assert third is not None
    assert third.until == NOW + 1.0


def test_a_task_without_a_limit_never_waits_nor_books(
    app: Celeriac, sqlite_slots: CountingSlots
) -> None:
    limits = RateLimits(app, sqlite_slots, now=lambda: NOW)

    decisions = limits.deferrals([request_for("tasks.free") for _ in range(5)])

    assert decisions == [None] * 5
    assert sqlite_slots.calls == []


def test_one_round_trip_books_a_whole_batch_in_the_broker(
    app: Celeriac, sqlite_slots: CountingSlots
) -> None:
    limits = RateLimits(app, sqlite_slots)
    batch = [request_for("tasks.limited") for _ in range(4)] + [request_for("tasks.free")]

    decisions = limits.deferrals(batch)

    assert sqlite_slots.calls == [[StartBooking("tasks.limited", 0.5, 4)]]
    assert [decision is None for decision in decisions] == [True, False, False, False, True]


def test_a_message_back_at_its_slot_starts_without_booking(app: Celeriac) -> None:
    limits = local_limits(app)
    limits.deferrals([request_for("tasks.limited")])
    back = request_for("tasks.limited", slot_header(NOW - 0.01, 2.0))

    [decision] = limits.deferrals([back])

    assert decision is None


def test_a_message_back_early_waits_again_for_the_same_slot(app: Celeriac) -> None:
    limits = local_limits(app)
    early = request_for("tasks.limited", slot_header(NOW + 3.0, 2.0))

    [decision] = limits.deferrals([early])

    assert decision is not None
    assert decision.until == NOW + 3.0


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(slot_header(NOW - 5.0, 2.0), id="long after its slot"),
        pytest.param(slot_header(NOW, 10.0), id="booked under another rate"),
    ],
)
def test_a_message_whose_slot_no_longer_holds_books_again(
    app: Celeriac, headers: dict[str, Any]
) -> None:
    limits = local_limits(app)
    limits.deferrals([request_for("tasks.limited")])

    [decision] = limits.deferrals([request_for("tasks.limited", headers)])

    assert decision is not None
    assert decision.until == NOW + 0.5


def test_a_retry_that_copied_the_slot_header_books_a_slot_of_its_own(app: Celeriac) -> None:
    limits = local_limits(app)
    limits.deferrals([request_for("tasks.limited")])
    retry = request_for("tasks.limited", slot_header(NOW, 2.0, retries=0), retries=1)

    [decision] = limits.deferrals([retry])

    assert decision is not None
    assert decision.until == NOW + 0.5


def test_control_rate_limit_changes_the_spacing_of_the_next_bookings(app: Celeriac) -> None:
    limits = local_limits(app)
    limits.deferrals([request_for("tasks.limited")])

    app.tasks["tasks.limited"].rate_limit = "10/s"
    [decision] = limits.deferrals([request_for("tasks.limited")])

    assert decision is not None
    assert decision.until == pytest.approx(NOW + 0.1)


def test_the_default_rate_limit_applies_to_tasks_without_their_own(app: Celeriac) -> None:
    app.conf.task_default_rate_limit = "1/s"
    limits = local_limits(app)

    _, second = limits.deferrals([request_for("tasks.free"), request_for("tasks.free")])

    assert second is not None
    assert second.until == NOW + 1.0


def test_worker_disable_rate_limits_starts_everything_at_once(app: Celeriac) -> None:
    app.conf.worker_disable_rate_limits = True
    limits = local_limits(app)

    decisions = limits.deferrals([request_for("tasks.limited") for _ in range(3)])

    assert decisions == [None, None, None]


def test_only_redis_and_sqlite_brokers_book_in_the_broker(
    app: Celeriac, sqlite_slots: CountingSlots
) -> None:
    memory: Transport = app.transport

    assert RateLimits(app, memory).shared is None
    assert RateLimits(app, sqlite_slots).shared is not None
