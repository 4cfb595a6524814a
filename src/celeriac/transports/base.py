"""The Transport interface every broker implements (design.md §3).

Small, synchronous and batch-first. Delivery is at least once: a fetched message is
leased to the fetching consumer and comes back only when that consumer is known to be
gone (its lease was not renewed), never after a fixed timeout while it is still working.
Delayed messages (``eta``) wait in the broker, not in a worker's memory.

Priorities run 0-9 with the larger number first, as on AMQP.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from celeriac.exceptions import DecodeError, OperationalError
from celeriac.protocol.envelope import Envelope

MIN_PRIORITY = 0
MAX_PRIORITY = 9
DEAD_LETTER_SUFFIX = ".dead_letter"
DEAD_LETTER_REASON_HEADER = "x-dead-letter-reason"
DEAD_LETTER_QUEUE_HEADER = "x-original-queue"
DEAD_LETTER_DELIVERIES_HEADER = "x-dead-letter-deliveries"
DEAD_LETTER_TIME_HEADER = "x-dead-lettered-at"


class TransportError(OperationalError):
    """The broker could not be reached or refused an operation."""


class BrokerRefused(TransportError):
    """The broker answered and refused this client: wrong credentials, a virtual host or
    database index it does not have. Waiting cannot mend that, so it is never retried."""


def dead_letter_queue(queue: str) -> str:
    """Name the queue that holds messages dead-lettered from ``queue``."""
    return queue + DEAD_LETTER_SUFFIX


def dead_letter_headers(
    headers: Mapping[str, Any], queue: str, reason: str, deliveries: int | None
) -> dict[str, Any]:
    """``headers`` with what a dead letter records: why, where from, how often delivered, when."""
    return {
        **headers,
        DEAD_LETTER_REASON_HEADER: reason,
        DEAD_LETTER_QUEUE_HEADER: queue,
        DEAD_LETTER_DELIVERIES_HEADER: deliveries,
        DEAD_LETTER_TIME_HEADER: time.time(),
    }


def mark_dead_letter(raw: str | bytes, queue: str, reason: str, deliveries: int | None) -> Any:
    """A stored JSON envelope with the dead-letter headers set; text that is not one, as is."""
    try:
        envelope = Envelope.from_json(raw)
    except DecodeError:
        return raw
    envelope.headers = dead_letter_headers(envelope.headers, queue, reason, deliveries)
    return envelope.to_json()


def routing_key_of(envelope: Envelope) -> str:
    """The routing key an envelope was published with ('' for none)."""
    info = envelope.properties.get("delivery_info") or {}
    return str(info.get("routing_key") or "")


def accepts_routing_key(routing_key: str | None, envelope: Envelope) -> bool:
    """Tell whether a subscription bound with ``routing_key`` (None: all) takes ``envelope``."""
    return routing_key is None or routing_key_of(envelope) == routing_key


def clamp_priority(priority: int | None) -> int:
    """Bring a priority into 0-9; None means 0."""
    if priority is None:
        return MIN_PRIORITY
    return max(MIN_PRIORITY, min(MAX_PRIORITY, int(priority)))


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One message for ``publish_many``; ``eta`` is a Unix time or None for now."""

    queue: str
    envelope: Envelope
    priority: int = 0
    eta: float | None = None


@dataclass(slots=True)
class Delivery:
    """A fetched message: acknowledge, reject or dead-letter it by ``tag``.

    ``delivery_count`` is 1 the first time a message is fetched and grows each time it
    comes back after its consumer vanished or rejected it with requeue.
    """

    envelope: Envelope
    queue: str
    tag: str
    delivery_count: int = 1


@runtime_checkable
class Subscription(Protocol):
    """A reader of one broadcast channel, from the moment it subscribed."""

    def get(self, timeout: float) -> list[Envelope]:
        """Return the envelopes broadcast since the last call, waiting up to ``timeout``."""
        ...

    def close(self) -> None:
        """Stop listening and free the subscription."""
        ...


@runtime_checkable
class Transport(Protocol):
    """A message broker connection: queues with leases, plus broadcast channels.

    Every method may be called from several threads at once; each implementation says
    in its docstring how it stays safe.
    """

    url: str

    def publish(
        self, queue: str, envelope: Envelope, *, priority: int = 0, eta: float | None = None
    ) -> None:
        """Put one message on ``queue``; with ``eta`` it becomes visible at that Unix time."""
        ...

    def publish_many(self, messages: Sequence[OutgoingMessage]) -> None:
        """Put several messages in one round trip."""
        ...

    def fetch(self, queues: Sequence[str], max_messages: int, timeout: float) -> list[Delivery]:
        """Lease up to ``max_messages`` ready messages, highest priority first, then oldest.

        Waits up to ``timeout`` seconds for the first one; returns an empty list if none.
        Queues earlier in ``queues`` are not favoured over later ones.
        """
        ...

    def ack(self, tags: Sequence[str]) -> None:
        """Remove delivered messages for good."""
        ...

    def reject(self, tags: Sequence[str], *, requeue: bool, delay: float = 0.0) -> None:
        """Give messages back (``requeue``) or drop them.

        A requeued message keeps its delivery count, so the next delivery counts one
        more; with ``delay`` it waits that many seconds in the broker before it is ready.
        """
        ...

    def release(self, tags: Sequence[str]) -> None:
        """Give messages back unacknowledged without counting a delivery (warm shutdown)."""
        ...

    def dead_letter(self, tags: Sequence[str], reason: str) -> None:
        """Move messages to their queue's dead-letter queue with ``reason`` in their headers."""
        ...

    def extend_lease(self, tags: Sequence[str]) -> None:
        """Tell the broker that this consumer still holds and works on these messages."""
        ...

    def stop_consuming(self, queues: Sequence[str]) -> None:
        """Take nothing more from ``queues`` ahead of a fetch, and give back what was.

        Only a broker that pushes messages before they are fetched (RabbitMQ) has work here.
        """
        ...

    def purge(self, queue: str) -> int:
        """Delete every waiting message in ``queue``; return how many."""
        ...

    def queue_size(self, queue: str) -> int:
        """Count the messages waiting in ``queue`` (ready or delayed, not leased)."""
        ...

    def broadcast(self, channel: str, envelope: Envelope) -> None:
        """Send to every current subscriber of ``channel``; nobody listening means lost."""
        ...

    def subscribe(self, channel: str, routing_key: str | None = None) -> Subscription:
        """Start receiving what is broadcast on ``channel`` from now on.

        With ``routing_key``, only what was broadcast with that routing key: remote-control
        replies reach just the client that asked (a direct exchange on RabbitMQ).
        """
        ...

    def record_revokes(self, task_ids: Sequence[str], expires: float) -> None:
        """Keep ``task_ids`` as revoked in the broker for ``expires`` seconds.

        Durable: a worker that starts or reconnects later reads them with ``read_revokes``,
        so it skips tasks revoked while it could not hear the broadcast.
        """
        ...

    def read_revokes(self) -> dict[str, float]:
        """Return every revoked id still kept, with the Unix time it expires."""
        ...

    def close(self) -> None:
        """Release connections and files; pending leases come back to the broker."""
        ...


@runtime_checkable
class ReplyQueues(Protocol):
    """A broker whose reply queues differ from task queues (optional; RabbitMQ's do).

    The ``rpc://`` result backend sends each result to the queue its client named in
    ``reply_to``. Without this protocol it uses ``publish`` and ``fetch``; RabbitMQ
    declares a reply queue as Celery's client does, so only that client declares it.
    """

    def publish_reply(self, queue: str, envelope: Envelope) -> None:
        """Send to the reply queue ``queue``, which its reader declared; never declare it."""
        ...

    def open_replies(self, queue: str, expires: float | None) -> Subscription:
        """Declare the reply queue ``queue`` (gone ``expires`` seconds after its reader
        stops) and read it from now on."""
        ...


@dataclass(frozen=True, slots=True)
class StartBooking:
    """A request to book ``count`` start slots for ``key``, ``interval`` seconds apart."""

    key: str
    interval: float
    count: int


@runtime_checkable
class SharedStartSlots(Protocol):
    """A broker that keeps rate-limit start slots for every consumer of it (optional).

    Redis and SQLite keep them, so a rate limit holds across the fleet; a transport
    without this method (RabbitMQ, in-memory) leaves each worker to space its own starts.
    """

    def book_starts(self, bookings: Sequence[StartBooking]) -> list[list[float]]:
        """Book each booking's slots atomically, by one clock shared by all consumers.

        A key's next free slot starts where its last booking ended, or now if that has
        passed; a booking whose ``interval`` differs from the key's last one (the rate
        changed) starts at most one new interval from now. Returns, per booking, the
        seconds from now until each of its slots, in one round trip for all of them.
        """
        ...
