"""The in-memory broker: queues and broadcast channels inside one process (edge layer).

For tests and single-process apps. Every ``MemoryTransport`` opened with the same URL in
a process (``memory://`` or ``memory://name``) shares one broker, the way several
connections share a server; the brokers live in a module-level registry keyed by name.
Semantics match the other transports: priorities, eta, leases that come back when not
extended, dead letters and broadcast.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from celeriac.protocol.envelope import Envelope
from celeriac.transports.base import (
    Delivery,
    OutgoingMessage,
    accepts_routing_key,
    clamp_priority,
    dead_letter_headers,
    dead_letter_queue,
)

__all__ = ["MemorySubscription", "MemoryTransport"]

SCHEME_PREFIX = "memory://"


@dataclass(slots=True)
class _Message:
    """A message in the broker; ``owner`` is set while it is leased."""

    id: int
    queue: str
    priority: int
    visible_at: float
    envelope: Envelope
    delivery_count: int = 0
    owner: str | None = None
    lease_expires: float = 0.0


class _Broker:
    """The state behind one ``memory://`` name; every method expects ``condition`` to be held.

    Each message is in exactly one place: a queue's ready heap (by priority, then time
    of becoming visible, then id), its delayed heap (by eta), or leased. Heap entries of
    messages that were since deleted are skipped when they surface.
    """

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.messages: dict[int, _Message] = {}
        self.subscribers: dict[str, set[MemorySubscription]] = defaultdict(set)
        self._ready: dict[str, list[tuple[int, float, int]]] = defaultdict(list)
        self._delayed: dict[str, list[tuple[float, int]]] = defaultdict(list)
        self._leases: list[tuple[float, int, int]] = []
        self._ids = itertools.count(1)
        self.revokes: dict[str, float] = {}

    def add(self, message: OutgoingMessage) -> None:
        """Store a new message, ready now or delayed until its eta."""
        now = time.time()
        visible_at = now if message.eta is None else message.eta
        stored = _Message(
            id=next(self._ids),
            queue=message.queue,
            priority=clamp_priority(message.priority),
            visible_at=visible_at,
            envelope=_copy(message.envelope),
        )
        self.messages[stored.id] = stored
        if visible_at > now:
            heapq.heappush(self._delayed[stored.queue], (visible_at, stored.id))
        else:
            self._make_ready(stored)

    def take(self, queues: Sequence[str], max_messages: int, lease: _Lease) -> list[Delivery]:
        """Lease up to ``max_messages`` ready messages from ``queues``, best first."""
        self._expire_leases()
        for queue in queues:
            self._promote_due(queue)
        deliveries: list[Delivery] = []
        while len(deliveries) < max_messages:
            message = self._pop_best(queues)
            if message is None:
                break
            message.owner = lease.owner
            message.delivery_count += 1
            self._lease(message, lease.seconds)
            deliveries.append(
                Delivery(
                    envelope=_copy(message.envelope),
                    queue=message.queue,
                    tag=f"{message.id}:{message.delivery_count}",
                    delivery_count=message.delivery_count,
                )
            )
        return deliveries

    def seconds_until_change(self, queues: Sequence[str]) -> float | None:
        """Return how long until a delayed message in ``queues`` or any lease falls due."""
        now = time.time()
        candidates = [self._delayed[queue][0][0] - now for queue in queues if self._delayed[queue]]
        if self._leases:
            candidates.append(self._leases[0][0] - time.monotonic())
        return max(0.0, min(candidates)) if candidates else None

    def leased(self, tags: Sequence[str]) -> Iterator[_Message]:
        """Yield the messages that ``tags`` lease now; stale or unknown tags are skipped."""
        for tag in tags:
            message = self.delivered(tag)
            if message is not None and message.owner is not None:
                yield message

    def delivered(self, tag: str) -> _Message | None:
        """Return the message of the delivery ``tag`` names, if it was not delivered again since."""
        message_id, delivery_count = _parse_tag(tag)
        message = self.messages.get(message_id)
        if message is None or message.delivery_count != delivery_count:
            return None
        return message

    def give_back(self, message: _Message, *, count_delivery: bool, delay: float = 0.0) -> None:
        """End a message's lease and put it back in its queue, ready or after ``delay``."""
        if not count_delivery:
            message.delivery_count -= 1
        message.owner = None
        if delay > 0:
            message.visible_at = time.time() + delay
            heapq.heappush(self._delayed[message.queue], (message.visible_at, message.id))
        else:
            self._make_ready(message)

    def extend(self, message: _Message, seconds: float) -> None:
        """Push a lease's expiry ``seconds`` from now."""
        self._lease(message, seconds)

    def move_to_dead_letter(self, message: _Message, reason: str) -> None:
        """Move a leased message to its queue's dead-letter queue, with ``reason`` in headers."""
        headers = dead_letter_headers(
            message.envelope.headers, message.queue, reason, message.delivery_count
        )
        message.envelope = replace(message.envelope, headers=headers)
        message.queue = dead_letter_queue(message.queue)
        message.owner = None
        message.delivery_count = 0
        message.visible_at = time.time()
        self._make_ready(message)

    def waiting(self, queue: str) -> list[_Message]:
        """Return the messages in ``queue`` that are not leased, ready or delayed."""
        self._expire_leases()
        ids = {entry[-1] for entry in self._ready[queue]}
        ids.update(message_id for _, message_id in self._delayed[queue])
        messages = (self.messages.get(message_id) for message_id in ids)
        return [
            message
            for message in messages
            if message is not None and message.owner is None and message.queue == queue
        ]

    def remove_waiting(self, queue: str) -> int:
        """Delete the messages in ``queue`` that are not leased; return how many."""
        messages = self.waiting(queue)
        for message in messages:
            del self.messages[message.id]
        self._ready.pop(queue, None)
        self._delayed.pop(queue, None)
        return len(messages)

    def _make_ready(self, message: _Message) -> None:
        heapq.heappush(
            self._ready[message.queue], (-message.priority, message.visible_at, message.id)
        )

    def _lease(self, message: _Message, seconds: float) -> None:
        message.lease_expires = time.monotonic() + seconds
        heapq.heappush(self._leases, (message.lease_expires, message.id, message.delivery_count))

    def _expire_leases(self) -> None:
        """Put back every message whose lease ran out; the delivery stays counted."""
        now = time.monotonic()
        while self._leases and self._leases[0][0] <= now:
            expires, message_id, delivery_count = heapq.heappop(self._leases)
            message = self.messages.get(message_id)
            if (
                message is not None
                and message.owner is not None
                and message.delivery_count == delivery_count
                and message.lease_expires == expires
            ):
                self.give_back(message, count_delivery=True)

    def _promote_due(self, queue: str) -> None:
        delayed = self._delayed[queue]
        now = time.time()
        while delayed and delayed[0][0] <= now:
            _, message_id = heapq.heappop(delayed)
            message = self.messages.get(message_id)
            if message is not None:
                self._make_ready(message)

    def _pop_best(self, queues: Sequence[str]) -> _Message | None:
        """Pop the best ready message across ``queues``, whatever their order."""
        best: tuple[int, float, int] | None = None
        best_queue = ""
        for queue in queues:
            ready = self._ready[queue]
            while ready and ready[0][2] not in self.messages:
                heapq.heappop(ready)
            if ready and (best is None or ready[0] < best):
                best, best_queue = ready[0], queue
        if best is None:
            return None
        heapq.heappop(self._ready[best_queue])
        return self.messages[best[2]]


@dataclass(frozen=True, slots=True)
class _Lease:
    owner: str
    seconds: float


_brokers: dict[str, _Broker] = {}
_brokers_lock = threading.Lock()


def _broker_for(url: str) -> _Broker:
    """Return the process-wide broker named by ``url``, creating it on first use."""
    name = url.removeprefix(SCHEME_PREFIX).strip("/")
    with _brokers_lock:
        broker = _brokers.get(name)
        if broker is None:
            broker = _brokers[name] = _Broker()
        return broker


def _parse_tag(tag: str) -> tuple[int, int]:
    """Split a delivery tag into message id and delivery count."""
    message_id, _, delivery_count = tag.partition(":")
    return int(message_id), int(delivery_count)


def _copy(envelope: Envelope) -> Envelope:
    """Copy an envelope so that neither publisher nor consumer changes the stored one."""
    return replace(envelope, headers=dict(envelope.headers), properties=dict(envelope.properties))


class MemoryTransport:
    """A connection to an in-process broker.

    Thread-safe: one Condition per broker guards all of its state, and waiting fetches and
    subscriptions sleep on it until a publish, a give-back or a due time wakes them.
    A delivery tag is ``"<message id>:<delivery count>"``, so a consumer whose lease ran
    out and was redelivered cannot act on the newer delivery. Options other than
    ``lease_seconds`` (meant for other brokers) are ignored.
    """

    def __init__(self, url: str = SCHEME_PREFIX, *, lease_seconds: float = 30.0, **options: Any):
        self.url = url
        self.lease_seconds = lease_seconds
        self._broker = _broker_for(url)
        self._lease = _Lease(owner=f"memory-{uuid.uuid4().hex}", seconds=lease_seconds)
        self._subscriptions: set[MemorySubscription] = set()

    def publish(
        self, queue: str, envelope: Envelope, *, priority: int = 0, eta: float | None = None
    ) -> None:
        """Put one message on ``queue``; with ``eta`` it becomes visible at that Unix time."""
        self.publish_many([OutgoingMessage(queue, envelope, priority, eta)])

    def publish_many(self, messages: Sequence[OutgoingMessage]) -> None:
        """Put several messages on their queues at once."""
        with self._broker.condition:
            for message in messages:
                self._broker.add(message)
            self._broker.condition.notify_all()

    def fetch(self, queues: Sequence[str], max_messages: int, timeout: float) -> list[Delivery]:
        """Lease up to ``max_messages`` ready messages, waiting up to ``timeout`` for the first."""
        queues = list(dict.fromkeys(queues))
        deadline = time.monotonic() + timeout
        broker = self._broker
        with broker.condition:
            while True:
                deliveries = broker.take(queues, max_messages, self._lease)
                remaining = deadline - time.monotonic()
                if deliveries or remaining <= 0:
                    return deliveries
                until_change = broker.seconds_until_change(queues)
                if until_change is not None:
                    remaining = min(remaining, until_change)
                broker.condition.wait(remaining)

    def ack(self, tags: Sequence[str]) -> None:
        """Remove delivered messages for good; tags of older deliveries are ignored."""
        with self._broker.condition:
            for tag in tags:
                message = self._broker.delivered(tag)
                if message is not None:
                    del self._broker.messages[message.id]
            self._broker.condition.notify_all()

    def reject(self, tags: Sequence[str], *, requeue: bool, delay: float = 0.0) -> None:
        """Give leased messages back (``requeue``), ready or after ``delay``, or drop them."""
        with self._broker.condition:
            for message in list(self._broker.leased(tags)):
                if requeue:
                    self._broker.give_back(message, count_delivery=True, delay=delay)
                else:
                    del self._broker.messages[message.id]
            self._broker.condition.notify_all()

    def release(self, tags: Sequence[str]) -> None:
        """Give leased messages back without counting their delivery."""
        with self._broker.condition:
            for message in list(self._broker.leased(tags)):
                self._broker.give_back(message, count_delivery=False)
            self._broker.condition.notify_all()

    def dead_letter(self, tags: Sequence[str], reason: str) -> None:
        """Move leased messages to their queue's dead-letter queue with ``reason``."""
        with self._broker.condition:
            for message in list(self._broker.leased(tags)):
                self._broker.move_to_dead_letter(message, reason)
            self._broker.condition.notify_all()

    def extend_lease(self, tags: Sequence[str]) -> None:
        """Keep leases for another ``lease_seconds`` from now."""
        with self._broker.condition:
            for message in list(self._broker.leased(tags)):
                self._broker.extend(message, self.lease_seconds)

    def stop_consuming(self, queues: Sequence[str]) -> None:
        """Do nothing: messages are taken only by a fetch."""

    def purge(self, queue: str) -> int:
        """Delete every waiting message in ``queue``; return how many."""
        with self._broker.condition:
            count = self._broker.remove_waiting(queue)
            self._broker.condition.notify_all()
            return count

    def queue_size(self, queue: str) -> int:
        """Count the messages waiting in ``queue`` (ready or delayed, not leased)."""
        with self._broker.condition:
            return len(self._broker.waiting(queue))

    def broadcast(self, channel: str, envelope: Envelope) -> None:
        """Send to every current subscriber of ``channel``."""
        with self._broker.condition:
            for subscription in self._broker.subscribers[channel]:
                if accepts_routing_key(subscription.routing_key, envelope):
                    subscription.pending.append(_copy(envelope))
            self._broker.condition.notify_all()

    def subscribe(self, channel: str, routing_key: str | None = None) -> MemorySubscription:
        """Start receiving what is broadcast on ``channel`` (with ``routing_key``) from now on."""
        subscription = MemorySubscription(self._broker, channel, routing_key)
        with self._broker.condition:
            self._broker.subscribers[channel].add(subscription)
            self._subscriptions.add(subscription)
        return subscription

    def record_revokes(self, task_ids: Sequence[str], expires: float) -> None:
        """Keep ``task_ids`` as revoked for ``expires`` seconds (a later expiry wins)."""
        expires_at = time.time() + expires
        with self._broker.condition:
            revokes = self._broker.revokes
            for task_id in task_ids:
                revokes[task_id] = max(expires_at, revokes.get(task_id, 0.0))

    def read_revokes(self) -> dict[str, float]:
        """Return the revoked ids that have not expired, forgetting those that have."""
        now = time.time()
        with self._broker.condition:
            kept = {key: at for key, at in self._broker.revokes.items() if at > now}
            self._broker.revokes = kept
            return dict(kept)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every message was acknowledged or dropped; return whether that happened.

        Meant for tests: publish, let a worker run, then join before asserting.
        """
        with self._broker.condition:
            return self._broker.condition.wait_for(lambda: not self._broker.messages, timeout)

    def close(self) -> None:
        """Give back this consumer's leases as if released, and close its subscriptions."""
        with self._broker.condition:
            held = [
                message
                for message in self._broker.messages.values()
                if message.owner == self._lease.owner
            ]
            for message in held:
                self._broker.give_back(message, count_delivery=False)
            self._broker.condition.notify_all()
            subscriptions = list(self._subscriptions)
            self._subscriptions.clear()
        for subscription in subscriptions:
            subscription.close()


class MemorySubscription:
    """A reader of one in-memory broadcast channel; waits on the broker's Condition."""

    def __init__(self, broker: _Broker, channel: str, routing_key: str | None = None) -> None:
        self.pending: list[Envelope] = []
        self.routing_key = routing_key
        self._broker = broker
        self._channel = channel
        self._closed = False

    def get(self, timeout: float) -> list[Envelope]:
        """Return the envelopes broadcast since the last call, waiting up to ``timeout``."""
        with self._broker.condition:
            self._broker.condition.wait_for(lambda: self.pending or self._closed, timeout)
            envelopes, self.pending = self.pending, []
            return envelopes

    def close(self) -> None:
        """Stop receiving; a ``get`` waiting in another thread returns at once."""
        with self._broker.condition:
            self._closed = True
            self._broker.subscribers[self._channel].discard(self)
            self._broker.condition.notify_all()
