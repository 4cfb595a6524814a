"""Fault injection for tests: a real transport that can be made to fail on sends."""

from __future__ import annotations

from collections.abc import Sequence

from celeriac.protocol.envelope import Envelope
from celeriac.transports.base import (
    Delivery,
    OutgoingMessage,
    Subscription,
    Transport,
    TransportError,
)


class SwitchableTransport:
    """Wrap a real transport; sends fail while ``is_down``, or for the next ``failures`` calls.

    It injects faults into a real broker connection; it is not a fake broker.
    """

    def __init__(self, inner: Transport, failures: int = 0) -> None:
        self.inner = inner
        self.url = inner.url
        self.failures = failures
        self.is_down = False
        self.attempts = 0

    def _check(self) -> None:
        self.attempts += 1
        if self.is_down:
            raise TransportError("broker is down")
        if self.failures:
            self.failures -= 1
            raise TransportError("broker is down")

    def publish(
        self, queue: str, envelope: Envelope, *, priority: int = 0, eta: float | None = None
    ) -> None:
        self._check()
        self.inner.publish(queue, envelope, priority=priority, eta=eta)

    def publish_many(self, messages: Sequence[OutgoingMessage]) -> None:
        self._check()
        self.inner.publish_many(messages)

    def fetch(self, queues: Sequence[str], max_messages: int, timeout: float) -> list[Delivery]:
        return self.inner.fetch(queues, max_messages, timeout)

    def ack(self, tags: Sequence[str]) -> None:
        self.inner.ack(tags)

    def reject(self, tags: Sequence[str], *, requeue: bool, delay: float = 0.0) -> None:
        self.inner.reject(tags, requeue=requeue, delay=delay)

    def release(self, tags: Sequence[str]) -> None:
        self.inner.release(tags)

    def dead_letter(self, tags: Sequence[str], reason: str) -> None:
        self.inner.dead_letter(tags, reason)

    def extend_lease(self, tags: Sequence[str]) -> None:
        self.inner.extend_lease(tags)

    def purge(self, queue: str) -> int:
        return self.inner.purge(queue)

    def queue_size(self, queue: str) -> int:
        return self.inner.queue_size(queue)

    def broadcast(self, channel: str, envelope: Envelope) -> None:
        self._check()
        self.inner.broadcast(channel, envelope)

    def stop_consuming(self, queues: Sequence[str]) -> None:
        self.inner.stop_consuming(queues)

    def subscribe(self, channel: str, routing_key: str | None = None) -> Subscription:
        return self.inner.subscribe(channel, routing_key)

    def record_revokes(self, task_ids: Sequence[str], expires: float) -> None:
        self._check()
        self.inner.record_revokes(task_ids, expires)

    def read_revokes(self) -> dict[str, float]:
        return self.inner.read_revokes()

    def close(self) -> None:
        self.inner.close()
