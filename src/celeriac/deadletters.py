"""Dead letters you can use: list, show, replay and purge them (services layer).

A message the worker could not run waits in ``<queue>.dead_letter`` with why it was moved,
where from, how often it was delivered and when (``transports/base.py``). These functions
read those queues through the app's transport: a message looked at is leased and then
released, so nothing is lost and no delivery is counted; a replayed one is published to
its queue again, without the dead-letter headers, before its dead letter is acknowledged
(at least once: a crash in between leaves both).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celeriac.protocol.envelope import Envelope
from celeriac.transports import connect
from celeriac.transports.base import (
    DEAD_LETTER_DELIVERIES_HEADER,
    DEAD_LETTER_QUEUE_HEADER,
    DEAD_LETTER_REASON_HEADER,
    DEAD_LETTER_SUFFIX,
    DEAD_LETTER_TIME_HEADER,
    Delivery,
    Transport,
    dead_letter_queue,
)

if TYPE_CHECKING:
    from celeriac.app import Celeriac

__all__ = ["DeadLetter", "dead_letters", "purge_dead_letters", "replay_dead_letters"]

DEAD_LETTER_HEADERS = (
    DEAD_LETTER_REASON_HEADER,
    DEAD_LETTER_QUEUE_HEADER,
    DEAD_LETTER_DELIVERIES_HEADER,
    DEAD_LETTER_TIME_HEADER,
)
FETCH_BATCH = 100
FETCH_WAIT = 0.2
# RabbitMQ pushes a consumer no more unacknowledged messages than its prefetch count, and
# every dead letter is held at once while they are read: the most AMQP allows.
PREFETCH_ALL = 65535


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead-lettered message: its task, why and when it was moved, and the message."""

    id: str | None
    task: str | None
    reason: str
    queue: str
    deliveries: int | None
    dead_lettered_at: float | None
    envelope: Envelope

    @classmethod
    def from_envelope(cls, envelope: Envelope, dead_letter_queue_name: str) -> DeadLetter:
        """Read a dead letter's fields from its headers (any may be missing)."""
        headers = envelope.headers
        original = headers.get(DEAD_LETTER_QUEUE_HEADER)
        deliveries = headers.get(DEAD_LETTER_DELIVERIES_HEADER)
        moved_at = headers.get(DEAD_LETTER_TIME_HEADER)
        return cls(
            id=_text(headers.get("id")),
            task=_text(headers.get("task")),
            reason=str(headers.get(DEAD_LETTER_REASON_HEADER) or "unknown"),
            queue=str(original or dead_letter_queue_name.removesuffix(DEAD_LETTER_SUFFIX)),
            deliveries=deliveries if isinstance(deliveries, int) else None,
            dead_lettered_at=float(moved_at) if isinstance(moved_at, int | float) else None,
            envelope=envelope,
        )

    @property
    def when(self) -> str:
        """When it was dead-lettered, as an ISO 8601 UTC time ('' if unknown)."""
        if self.dead_lettered_at is None:
            return ""
        moment = datetime.datetime.fromtimestamp(self.dead_lettered_at, datetime.UTC)
        return moment.isoformat(timespec="seconds")

    def replayable(self) -> Envelope:
        """The message as it was before it was dead-lettered."""
        headers = {k: v for k, v in self.envelope.headers.items() if k not in DEAD_LETTER_HEADERS}
        return Envelope(
            body=self.envelope.body,
            content_type=self.envelope.content_type,
            content_encoding=self.envelope.content_encoding,
            headers=headers,
            properties=dict(self.envelope.properties),
        )


def dead_letter_queues(app: Celeriac, queue: str | None = None) -> list[str]:
    """The dead-letter queues of ``queue``, or of every queue the app knows."""
    names = [queue] if queue else sorted(app.amqp.queues)
    return [dead_letter_queue(name) for name in names]


def dead_letters(app: Celeriac, queue: str | None = None) -> list[DeadLetter]:
    """Every dead letter of ``queue`` (or of every known queue), left where it is."""
    with (
        _own_transport(app) as transport,
        _leased(transport, dead_letter_queues(app, queue)) as held,
    ):
        return [DeadLetter.from_envelope(delivery.envelope, delivery.queue) for delivery in held]


def replay_dead_letters(
    app: Celeriac,
    ids: Iterable[str] | None = None,
    *,
    queue: str | None = None,
    to: str | None = None,
) -> list[DeadLetter]:
    """Send dead letters back to their queue (or to ``to``); return those sent.

    ``ids`` picks task ids; None replays every dead letter of ``queue`` (or of every
    known queue). The others stay where they are.
    """
    wanted = None if ids is None else set(ids)
    replayed: list[DeadLetter] = []
    with (
        _own_transport(app) as transport,
        _leased(transport, dead_letter_queues(app, queue)) as held,
    ):
        for delivery in held:
            letter = DeadLetter.from_envelope(delivery.envelope, delivery.queue)
            if wanted is not None and letter.id not in wanted:
                continue
            transport.publish(to or letter.queue, letter.replayable(), priority=_priority(letter))
            transport.ack([delivery.tag])
            replayed.append(letter)
    return replayed


def purge_dead_letters(app: Celeriac, queue: str | None = None) -> int:
    """Delete the dead letters of ``queue`` (or of every known queue); return how many."""
    transport = app.transport
    return sum(transport.purge(name) for name in dead_letter_queues(app, queue))


@contextmanager
def _own_transport(app: Celeriac) -> Iterator[Transport]:
    """A broker connection of its own that may hold every dead letter at once."""
    options = {**app.conf.broker_transport_options, "prefetch_count": PREFETCH_ALL}
    transport = connect(app.broker_url, **options)
    try:
        yield transport
    finally:
        transport.close()


@contextmanager
def _leased(transport: Transport, queues: list[str]) -> Iterator[list[Delivery]]:
    """Lease every message of ``queues``; give back, uncounted, those still held after."""
    deliveries: list[Delivery] = []
    try:
        while batch := transport.fetch(queues, FETCH_BATCH, FETCH_WAIT):
            deliveries += batch
        yield deliveries
    finally:
        transport.stop_consuming(queues)
        if deliveries:
            transport.release([delivery.tag for delivery in deliveries])


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _priority(letter: DeadLetter) -> int:
    priority = letter.envelope.properties.get("priority")
    return priority if isinstance(priority, int) else 0
