"""The RabbitMQ broker, with Celery's queues, exchanges and delay levels (edge layer).

Declarations follow Celery's (wire protocol §4, ``amqp_topology.py``): a task queue is
durable, bound to a direct exchange of its name, and tasks go to the default exchange
with the queue name as routing key, so a Celery client or worker shares queues with
celeriac. Everything is declared passively first and created only when missing, so an
entity Celery declared with other arguments is used as it is instead of failing with 406.

Leases are the connection: an unacknowledged delivery goes back to its queue when the
consumer's connection dies (RabbitMQ's heartbeats notice a silent one) and never while
it lives, so ``extend_lease`` has nothing to do. RabbitMQ's ``consumer_timeout``
(30 minutes by default) still closes the channel of a consumer that holds one delivery
longer than that: raise it in rabbitmq.conf for longer tasks. Delayed messages never
count against it, since they wait in the broker's delay levels, not in a consumer.

Delivery counts: exact on quorum queues (``x-delivery-count``); on classic queues 1, or
2 once RabbitMQ flags the message as redelivered (a lost consumer). Every way to give an
AMQP message back only flags it, so ``reject(requeue=True)`` and ``release`` publish a copy
(confirmed) that carries the count so far in a header and then ack the original: at least
once, at the end of the queue. So the worker's own requeues (a task whose process died)
are counted exactly on every queue type, and ``task_max_deliveries`` ends a crash loop;
only a consumer's whole connection dying again and again goes uncounted on classic queues.

Prefetch: ``prefetch_count`` deliveries per consumer (one consumer per queue); by default
the ``max_messages`` of the first fetch, which for the worker is its prefetch window, as
Celery's qos. ``queue_size`` and ``purge`` see ready messages only: delayed ones wait in
the shared delay-level queues, where they cannot be told apart by destination.

Thread-safe: each connection is owned by one I/O thread (``amqp_session.py``); a failed
connection is replaced on the next call, and tags of the old one act on nothing.
Fork-safe: a child process opens a connection of its own on its first call.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from celeriac.exceptions import ImproperlyConfigured
from celeriac.protocol.envelope import Envelope
from celeriac.transports import redact_url
from celeriac.transports.amqp_connection import BrokerList
from celeriac.transports.amqp_message import to_amqp
from celeriac.transports.amqp_revokes import read_revokes, revoke_entry, revoke_stream
from celeriac.transports.amqp_session import Held, Session
from celeriac.transports.amqp_topology import (
    DELAY_ENTRY_EXCHANGE,
    QUEUE_TYPES,
    Binding,
    ExchangeSpec,
    QueueSpec,
    channel_exchange,
    delay_binding,
    delay_seconds,
    delay_topology,
    delayed_routing_key,
    subscriber_queue,
    task_queue,
)
from celeriac.transports.base import (
    Delivery,
    OutgoingMessage,
    TransportError,
    clamp_priority,
    dead_letter_headers,
    dead_letter_queue,
)

__all__ = ["AmqpSubscription", "AmqpTransport"]

# After a fetch starts consumers, it waits this long at most for the messages that were
# ready in their queues, so the first batch is ordered by priority across all of them.
SETTLE_SECONDS = 0.1


class AmqpTransport:
    """A connection to a RabbitMQ broker; see the module docstring for the semantics.

    URLs: ``amqp://``, ``amqps://`` and ``pyamqp://`` (``amqp_connection.py``).
    Options: ``max_priority`` (``x-max-priority`` of the queues this transport creates),
    ``queue_type`` (``classic`` or ``quorum``), ``prefetch_count``, ``confirm_publish``
    (default True: publishes return once the broker confirmed them), and the connection
    options of ``amqp_connection.parse_settings``. A ``;``-separated list of URLs fails
    over from one broker to the next (``amqp_connection.BrokerList``, option
    ``failover_strategy``). Options meant for other brokers are ignored.
    """

    def __init__(
        self,
        url: str,
        *,
        max_priority: int | None = None,
        queue_type: str = "classic",
        prefetch_count: int | None = None,
        confirm_publish: bool = True,
        **options: Any,
    ) -> None:
        if queue_type not in QUEUE_TYPES:
            raise ImproperlyConfigured(
                f"queue_type must be one of {', '.join(QUEUE_TYPES)}, not {queue_type!r}"
            )
        self.url = url
        self.max_priority = max_priority
        self.queue_type = queue_type
        self.prefetch_count = int(prefetch_count) if prefetch_count else 0
        self.confirm_publish = confirm_publish
        self._brokers = BrokerList(url, options)
        self._settings = self._brokers.current
        self._lock = threading.Lock()
        self._session: Session | None = None
        self._generations = itertools.count(1)
        self._subscriptions: set[AmqpSubscription] = set()
        self._closed = False

    @property
    def connection_name(self) -> str:
        """The name RabbitMQ lists this transport's connection under."""
        return self._settings.connection_name

    def publish(
        self, queue: str, envelope: Envelope, *, priority: int = 0, eta: float | None = None
    ) -> None:
        """Put one message on ``queue``; with ``eta`` it waits in the delay levels."""
        self.publish_many([OutgoingMessage(queue, envelope, priority, eta)])

    def publish_many(self, messages: Sequence[OutgoingMessage]) -> None:
        """Publish every message, then wait once for all their confirms."""
        if not messages:
            return
        now = time.time()
        outgoing: list[tuple[str, str, Any]] = []
        delayed: set[str] = set()
        direct: set[str] = set()
        for message in messages:
            priority = clamp_priority(message.priority)
            delay = delay_seconds(message.eta, now) if message.eta is not None else 0
            if delay:
                delayed.add(message.queue)
                key = delayed_routing_key(delay, message.queue)
                amqp_message = to_amqp(message.envelope, priority, delayed=True)
                outgoing.append((DELAY_ENTRY_EXCHANGE, key, amqp_message))
            else:
                direct.add(message.queue)
                outgoing.append(("", message.queue, to_amqp(message.envelope, priority)))

        def send(session: Session) -> Future[None]:
            for queue in direct:
                self._ensure_task_queue(session, queue)
            for queue in delayed:
                self._ensure_delayed(session, queue)
            return session.publish(outgoing, confirm=self.confirm_publish)

        session = self._live_session()
        session.wait_confirmed(session.call(send))

    def fetch(self, queues: Sequence[str], max_messages: int, timeout: float) -> list[Delivery]:
        """Take up to ``max_messages`` buffered deliveries, highest priority first, then oldest.

        The first fetch of a queue starts its consumer; the broker then pushes up to
        ``prefetch_count`` messages ahead. Waits up to ``timeout`` for the first one.
        """
        unique = list(dict.fromkeys(queues))
        if not unique or max_messages < 1:
            return []
        deadline = time.monotonic() + timeout
        if not self.prefetch_count:
            self.prefetch_count = max_messages
        session = self._live_session()
        if session.prefetch_count and all(queue in session.consumers for queue in unique):
            # The common case: every consumer runs, so there is nothing for the I/O thread.
            expected = 0
        else:
            expected = session.call(lambda live: self._start_consuming(live, unique))
        taken = self._take(session, set(unique), max_messages, deadline, expected)
        return [
            Delivery(
                held.received.envelope,
                held.queue,
                f"{session.generation}:{held.delivery_tag}",
                held.received.delivery_count,
            )
            for held in taken
        ]

    def ack(self, tags: Sequence[str]) -> None:
        """Acknowledge deliveries; tags of a lost connection or already settled are skipped."""
        self._settle(tags, "ack")

    def reject(self, tags: Sequence[str], *, requeue: bool, delay: float = 0.0) -> None:
        """Give deliveries back (``requeue``), or drop them.

        A classic queue counts no deliveries, so a requeued message goes back as a
        confirmed copy that carries its count so far, at the queue's end or, with
        ``delay``, through the delay levels; the original is then acked.
        """
        if not requeue:
            self._settle(tags, "drop")
            return
        session, entries = self._held(tags)
        if session is None or not entries:
            return
        now = time.time()
        seconds = delay_seconds(now + delay, now)
        copies = []
        for entry in entries:
            received = entry.received
            message = to_amqp(
                received.envelope,
                received.priority,
                delayed=bool(seconds),
                earlier_deliveries=received.delivery_count,
            )
            if seconds:
                key = delayed_routing_key(seconds, entry.queue)
                copies.append((DELAY_ENTRY_EXCHANGE, key, message))
            else:
                copies.append(("", entry.queue, message))
        queues = {entry.queue for entry in entries}
        declare = self._ensure_delayed if seconds else self._ensure_task_queue
        self._move(session, entries, copies, queues, declare)

    def release(self, tags: Sequence[str]) -> None:
        """Put confirmed copies that keep the delivery count at the queue's end; ack these."""
        session, entries = self._held(tags)
        if session is None or not entries:
            return
        copies = [
            (
                "",
                entry.queue,
                to_amqp(
                    entry.received.envelope,
                    entry.received.priority,
                    earlier_deliveries=entry.received.delivery_count - 1,
                ),
            )
            for entry in entries
        ]
        self._move(session, entries, copies, set(), self._ensure_task_queue)

    def dead_letter(self, tags: Sequence[str], reason: str) -> None:
        """Publish the messages to ``<queue>.dead_letter`` with ``reason``, then ack them."""
        session, entries = self._held(tags)
        if session is None or not entries:
            return
        copies = []
        for entry in entries:
            original = entry.received.envelope
            envelope = Envelope(
                body=original.body,
                content_type=original.content_type,
                content_encoding=original.content_encoding,
                headers=dead_letter_headers(
                    original.headers, entry.queue, reason, entry.received.delivery_count
                ),
                properties=original.properties,
            )
            copies.append(
                ("", dead_letter_queue(entry.queue), to_amqp(envelope, entry.received.priority))
            )
        queues = {queue for _, queue, _ in copies}
        self._move(session, entries, copies, queues, self._ensure_task_queue)

    def extend_lease(self, tags: Sequence[str]) -> None:
        """Do nothing: a delivery stays leased while this transport's connection lives."""

    def stop_consuming(self, queues: Sequence[str]) -> None:
        """Cancel the consumers of ``queues`` and give back what they pushed ahead of a fetch."""
        session = self._session
        if session is None or not session.is_alive or session.pid != os.getpid():
            return
        wanted = set(queues)
        session.call(lambda live: live.cancel_consumers(wanted))
        with session.changed:
            early = [held for held in session.ready if held.queue in wanted]
        self.release([f"{session.generation}:{held.delivery_tag}" for held in early])

    def purge(self, queue: str) -> int:
        """Delete the ready messages of ``queue``; return how many (delayed ones stay)."""

        def purge(session: Session) -> int:
            if session.queue_size(queue) is None:
                return 0
            return session.purge(queue)

        return self._live_session().call(purge)

    def queue_size(self, queue: str) -> int:
        """Count the ready messages of ``queue`` (not the delayed or unacknowledged ones)."""
        return self._live_session().call(lambda session: session.queue_size(queue) or 0)

    def broadcast(self, channel: str, envelope: Envelope) -> None:
        """Publish to the channel's exchange with the envelope's routing key; not confirmed."""
        exchange = channel_exchange(channel)
        info = envelope.properties.get("delivery_info") or {}
        routing_key = str(info.get("routing_key") or "")
        message = to_amqp(envelope, clamp_priority(envelope.properties.get("priority")))

        def send(session: Session) -> None:
            self._ensure_exchange(session, exchange)
            session.publish([(exchange.name, routing_key, message)], confirm=False)

        self._live_session().call(send)

    def record_revokes(self, task_ids: Sequence[str], expires: float) -> None:
        """Append ``task_ids`` to the revokes stream (``amqp_revokes.py``), confirmed."""
        spec = revoke_stream(expires)
        message = revoke_entry(task_ids, expires)

        def send(session: Session) -> Future[None]:
            if "queue:" + spec.name not in session.declared:
                session.declare_queue(spec)
            return session.publish([("", spec.name, message)])

        session = self._live_session()
        session.wait_confirmed(session.call(send))

    def read_revokes(self) -> dict[str, float]:
        """Return the revoked ids in the revokes stream that have not expired."""
        return read_revokes(self._settings)

    def publish_reply(self, queue: str, envelope: Envelope) -> None:
        """Send to reply queue ``queue`` through the default exchange, as Celery's rpc
        backend does; its reader declared it, and a reply to a queue gone is dropped."""
        session = self._live_session()
        message = to_amqp(envelope, 0)
        session.wait_confirmed(
            session.call(
                lambda live: live.publish([("", queue, message)], confirm=self.confirm_publish)
            )
        )

    def open_replies(self, queue: str, expires: float | None) -> AmqpSubscription:
        """Declare reply queue ``queue`` as Celery's client does (not durable, deleted
        ``expires`` seconds after its last reader) and read it."""
        arguments = {"x-expires": int(expires * 1000)} if expires else {}
        spec = QueueSpec(queue, durable=False, auto_delete=True, arguments=arguments)
        return AmqpSubscription(self, queue, reply_queue=spec)

    def subscribe(self, channel: str, routing_key: str | None = None) -> AmqpSubscription:
        """Start receiving what is broadcast on ``channel`` (with ``routing_key``) from now on."""
        subscription = AmqpSubscription(self, channel, routing_key)
        with self._lock:
            self._subscriptions.add(subscription)
        return subscription

    def close(self) -> None:
        """Release every delivery still held, then close the connection; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            subscriptions = list(self._subscriptions)
            self._subscriptions.clear()
            session = self._session
        for subscription in subscriptions:
            subscription.close()
        if session is None or not session.is_alive or session.pid != os.getpid():
            return
        try:
            # Without consumers, the copies that release puts back are not delivered
            # here again in the moment before the connection closes.
            session.call(Session.cancel_consumers)
            with session.changed:
                held = [f"{session.generation}:{tag}" for tag in session.held]
            self.release(held)
        finally:
            session.close()

    # ---- internals, called with a live session -----------------------------------------

    def _live_session(self) -> Session:
        """Return the open session, connecting first if there is none or it failed."""
        with self._lock:
            if self._closed:
                raise TransportError(f"RabbitMQ transport {redact_url(self.url)} is closed")
            session = self._session
            if session is None or not session.is_alive or session.pid != os.getpid():
                # A forked child has the parent's session without its I/O thread: it
                # leaves the socket to the parent and connects on its own.
                session = self._brokers.connect(
                    lambda settings: Session(settings, next(self._generations)),
                    after_loss=session is not None and session.pid == os.getpid(),
                )
                self._settings = session.settings
                self._session = session
            return session

    def _own(self, tags: Sequence[str]) -> tuple[Session | None, list[int]]:
        """Return the live session and the delivery tags of ``tags`` that belong to it."""
        session = self._session
        if session is None or not session.is_alive or session.pid != os.getpid():
            return None, []
        prefix = f"{session.generation}:"
        numbers = [int(tag.removeprefix(prefix)) for tag in tags if tag.startswith(prefix)]
        return session, numbers

    def _held(self, tags: Sequence[str]) -> tuple[Session | None, list[Held]]:
        session, numbers = self._own(tags)
        if session is None:
            return None, []
        with session.changed:
            return session, [session.held[n] for n in numbers if n in session.held]

    def _settle(self, tags: Sequence[str], action: str) -> None:
        session, numbers = self._own(tags)
        if session is not None and numbers:
            session.call(lambda live: live.settle(numbers, action))

    def _move(
        self,
        session: Session,
        entries: list[Held],
        copies: list[tuple[str, str, Any]],
        queues: set[str],
        declare: Callable[[Session, str], None],
    ) -> None:
        """Declare ``queues``, publish ``copies`` and wait for their confirms, then ack these."""

        def send(live: Session) -> Future[None]:
            for queue in queues:
                declare(live, queue)
            return live.publish(copies)

        session.wait_confirmed(session.call(send))
        numbers = [entry.delivery_tag for entry in entries]
        session.call(lambda live: live.settle(numbers, "ack"))

    def _start_consuming(self, session: Session, queues: list[str]) -> int:
        """Start consumers where missing; return how many messages they will push at once."""
        session.set_prefetch(self.prefetch_count)
        expected = 0
        for queue in queues:
            if queue in session.consumers:
                continue
            self._ensure_task_queue(session, queue)
            expected += min(session.queue_size(queue) or 0, session.prefetch_count)
            session.consume(queue)
        return expected

    def _take(
        self, session: Session, wanted: set[str], max_messages: int, deadline: float, expected: int
    ) -> list[Held]:
        """Wait for buffered deliveries of ``wanted`` queues and remove the best from ``ready``."""
        settle_until = time.monotonic() + SETTLE_SECONDS if expected else 0.0
        with session.changed:
            while True:
                if session.failure is not None:
                    raise session.failure
                available = [held for held in session.ready if held.queue in wanted]
                now = time.monotonic()
                if available and (
                    len(available) >= min(expected, max_messages) or now >= settle_until
                ):
                    break
                until = settle_until if available else deadline
                if now >= until:
                    break
                session.changed.wait(until - now)
            available.sort(key=lambda held: (-held.received.priority, held.order))
            taken = available[:max_messages]
            if taken:
                chosen = {id(held) for held in taken}
                session.ready[:] = [held for held in session.ready if id(held) not in chosen]
            return taken

    def _ensure_task_queue(self, session: Session, queue: str) -> None:
        """Declare task queue ``queue`` with its direct exchange and binding, once a session."""
        key = "task:" + queue
        if key in session.declared:
            return
        spec = task_queue(queue, max_priority=self.max_priority, queue_type=self.queue_type)
        session.declare_queue(spec)
        self._ensure_exchange(session, ExchangeSpec(queue, "direct"))
        session.bind(Binding(queue, queue, queue))
        session.declared.add(key)

    def _ensure_delayed(self, session: Session, queue: str) -> None:
        """Declare the delay levels once a session, and bind ``queue`` to their end."""
        self._ensure_task_queue(session, queue)
        if "delay-levels" not in session.declared:
            exchanges, queues, bindings = delay_topology(self.queue_type)
            for exchange in exchanges:
                self._ensure_exchange(session, exchange)
            for level in queues:
                session.declare_queue(level)
            for binding in bindings:
                session.bind(binding)
            session.declared.add("delay-levels")
        key = "delay:" + queue
        if key not in session.declared:
            session.bind(delay_binding(queue))
            session.declared.add(key)

    @staticmethod
    def _ensure_exchange(session: Session, exchange: ExchangeSpec) -> None:
        if "exchange:" + exchange.name not in session.declared:
            session.declare_exchange(exchange)


class AmqpSubscription:
    """A reader of one broadcast channel: an exclusive queue bound to the channel's exchange,
    or of a reply queue (``reply_queue``), read straight from the default exchange.

    It is set up before ``subscribe`` returns, so nothing broadcast after it is missed.
    When the connection is lost, ``get`` raises TransportError once and the next call
    subscribes again (what was broadcast in between is lost). Use it from one thread.
    """

    def __init__(
        self,
        transport: AmqpTransport,
        channel: str,
        routing_key: str | None = None,
        *,
        reply_queue: QueueSpec | None = None,
    ) -> None:
        self._transport = transport
        self._channel = channel
        self._routing_key = routing_key
        self._reply_queue = reply_queue
        self._closed = False
        self._session, self._tag, self._queue = self._open()

    def get(self, timeout: float) -> list[Envelope]:
        """Return the envelopes broadcast since the last call, waiting up to ``timeout``."""
        if self._closed:
            return []
        if not self._session.is_alive or self._session.pid != os.getpid():
            self._session, self._tag, self._queue = self._open()
        session = self._session
        deadline = time.monotonic() + timeout
        with session.broadcast:
            while True:
                inbox = session.inboxes.get(self._tag)
                if inbox:
                    envelopes = list(inbox)
                    inbox.clear()
                    return envelopes
                if session.failure is not None:
                    raise session.failure
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    return []
                session.broadcast.wait(remaining)

    def close(self) -> None:
        """Cancel the consumer and delete the queue; calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        tag, queue, session = self._tag, self._queue, self._session
        if session.is_alive:
            with contextlib.suppress(TransportError):
                session.call(lambda live: live.unsubscribe(tag, queue))
        with session.broadcast:
            session.broadcast.notify_all()

    def _open(self) -> tuple[Session, str, str]:
        reply_queue = self._reply_queue
        if reply_queue is not None:

            def read(session: Session) -> str:
                session.declare_queue(reply_queue)
                return session.subscribe(reply_queue.name)

            session = self._transport._live_session()
            return session, session.call(read), reply_queue.name
        exchange = channel_exchange(self._channel)
        queue, binding_key = subscriber_queue(self._channel, self._routing_key)

        def subscribe(session: Session) -> str:
            AmqpTransport._ensure_exchange(session, exchange)
            session.declare_queue(queue)
            session.bind(Binding(exchange.name, queue.name, binding_key))
            return session.subscribe(queue.name)

        session = self._transport._live_session()
        return session, session.call(subscribe), queue.name
