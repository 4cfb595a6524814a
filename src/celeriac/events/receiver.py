"""EventReceiver: capture the event stream and hand each event to its handler (services layer).

It subscribes to the ``celeryev`` broadcast channel of the Transport it is handed, decodes
single events and batched lists alike (wire protocol §5.1), keeps the Lamport clock in step
with what it receives (§5.2) and filters by routing key with AMQP topic rules.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

from celeriac.defaults import DEFAULTS
from celeriac.entity import topic_matches
from celeriac.events.clock import LamportClock
from celeriac.events.dispatcher import EventsApp
from celeriac.exceptions import DecodeError, TimeoutError
from celeriac.messaging import transport_of
from celeriac.protocol.envelope import Envelope
from celeriac.protocol.event import EVENT_EXCHANGE, utcoffset
from celeriac.serialization import decompress, loads
from celeriac.transports.base import Transport

__all__ = ["EventReceiver"]

logger = logging.getLogger(__name__)

EventBody = dict[str, Any]
Handler = Callable[[EventBody], object]

# How long one wait on the subscription lasts, so that should_stop is seen promptly.
POLL_INTERVAL = 0.25


@runtime_checkable
class ControlBroadcaster(Protocol):
    """The part of the remote-control client that wakes workers up."""

    def broadcast(self, command: str, *, connection: Transport | None = None) -> object: ...


class EventReceiver:
    """Capture events.

    Args:
        channel: the connection (``app.connection_for_read()``), channel or transport to
            listen on; the receiver subscribes at once, so it sees every event sent after it
            was built.
        handlers: event type -> callable taking the event dict; ``"*"`` catches the types
            without a handler of their own.
        routing_key: binding pattern (``#`` all, ``worker.#`` worker events only).
        node_id: identifies this receiver (default: a new uuid4).
        app: supplies the shared clock, ``event_serializer`` and, once the remote-control
            client exists, the ``control`` used to wake workers up.
        accept: serializer names or content types accepted (default: the event serializer
            and json).
        queue_prefix, queue_ttl, queue_expires: accepted for Celery compatibility; a
            transport subscription is not a named queue, so they have no effect.

    Set ``should_stop`` (from a handler or another thread) to end a capture. Call
    :meth:`close` when done.
    """

    def __init__(
        self,
        channel: Any,
        handlers: Mapping[str, Handler] | None = None,
        routing_key: str = "#",
        node_id: str | None = None,
        app: EventsApp | None = None,
        queue_prefix: str | None = None,
        accept: Collection[str] | None = None,
        queue_ttl: float | None = None,
        queue_expires: float | None = None,
    ) -> None:
        self.app = app
        self.channel = channel
        self.handlers: dict[str, Handler] = dict(handlers or {})
        self.routing_key = routing_key
        self.node_id = node_id or str(uuid.uuid4())
        self.clock = app.clock if app is not None else LamportClock()
        serializer = app.conf.event_serializer if app is not None else "json"
        self.max_size: int | None = (
            app.conf.worker_max_message_size
            if app is not None
            else DEFAULTS["worker_max_message_size"].default
        )
        self.accept = frozenset(accept) if accept is not None else frozenset({serializer, "json"})
        self.should_stop = False
        self._pending: deque[Envelope] = deque()
        self._subscription = transport_of(channel).subscribe(EVENT_EXCHANGE)

    def process(self, type: str, event: EventBody) -> None:
        """Call the handler for ``type``, or the ``"*"`` handler, if there is one."""
        handler = self.handlers.get(type) or self.handlers.get("*")
        if handler is not None:
            handler(event)

    def itercapture(
        self, limit: int | None = None, timeout: float | None = None, wakeup: bool = True
    ) -> Iterator[list[EventBody]]:
        """Handle messages as they come; yield the events of each one.

        Args:
            limit: stop after this many messages (a batched list is one message).
            timeout: seconds to wait for each message.
            wakeup: ask workers to send a heartbeat first (needs ``app.control``).

        Raises:
            TimeoutError: no message came within ``timeout``.
        """
        if wakeup:
            self.wakeup_workers()
        received = 0
        while not self.should_stop and (not limit or received < limit):
            envelope = self._next_matching(timeout)
            if envelope is None:
                return
            received += 1
            yield self._receive(envelope)

    def capture(
        self, limit: int | None = None, timeout: float | None = None, wakeup: bool = True
    ) -> None:
        """Handle messages until ``limit``, a ``timeout`` or ``should_stop``.

        Raises:
            TimeoutError: no message came within ``timeout``.
        """
        for _ in self.itercapture(limit=limit, timeout=timeout, wakeup=wakeup):
            pass

    def wakeup_workers(self) -> None:
        """Broadcast the ``heartbeat`` control command so that workers show up at once.

        Sends nothing unless the app has a remote-control client (``app.control``).
        """
        control = getattr(self.app, "control", None)
        if isinstance(control, ControlBroadcaster):
            control.broadcast("heartbeat", connection=self.channel)

    def event_from_message(
        self, body: EventBody, localize: bool = True, now: Callable[[], float] = time.time
    ) -> tuple[str, EventBody]:
        """Complete a received event: its clock, local timestamp and ``local_received``."""
        type = body["type"]
        if type == "task-sent":
            # Clients never synchronise their clocks, so task-sent is placed just before
            # our own time instead (wire protocol §5.2).
            body["clock"] = max(self.clock.value, 1) - 1
            self.clock.adjust(body["clock"])
        elif isinstance(body.get("clock"), int):
            self.clock.adjust(body["clock"])
        else:
            body["clock"] = self.clock.forward()
        if localize:
            offset, timestamp = body.get("utcoffset"), body.get("timestamp")
            if isinstance(offset, int | float) and isinstance(timestamp, int | float):
                body["timestamp"] = timestamp - (offset - utcoffset()) * 3600
        body["local_received"] = now()
        return type, body

    def close(self) -> None:
        """Stop listening."""
        self._subscription.close()

    def __enter__(self) -> EventReceiver:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _next_matching(self, timeout: float | None) -> Envelope | None:
        """Wait for the next envelope whose routing key matches; None once asked to stop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.should_stop:
            if self._pending:
                envelope = self._pending.popleft()
                if topic_matches(self.routing_key, _routing_key_of(envelope)):
                    return envelope
                continue
            wait = POLL_INTERVAL
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no event received within {timeout} seconds")
                wait = min(wait, remaining)
            self._pending.extend(self._subscription.get(wait))
        return None

    def _receive(self, envelope: Envelope) -> list[EventBody]:
        """Decode one message (a single event or a list) and dispatch its events."""
        try:
            body = self._decode(envelope)
        except DecodeError as exc:
            logger.warning("dropping an event message that cannot be decoded: %s", exc)
            return []
        events: list[EventBody] = []
        for raw in body if isinstance(body, list) else [body]:
            if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
                logger.warning("dropping an event without a type: %.200r", raw)
                continue
            type, event = self.event_from_message(raw)
            self.process(type, event)
            events.append(event)
        return events

    def _decode(self, envelope: Envelope) -> Any:
        data = envelope.body
        if self.max_size is not None and len(data) > self.max_size:
            raise DecodeError(
                f"body of {len(data)} bytes exceeds worker_max_message_size={self.max_size}"
            )
        compression = envelope.headers.get("compression")
        if compression:
            data = decompress(data, compression, max_size=self.max_size)
        return loads(data, envelope.content_type, envelope.content_encoding, accept=self.accept)


def _routing_key_of(envelope: Envelope) -> str:
    delivery_info = envelope.properties.get("delivery_info") or {}
    return str(delivery_info.get("routing_key") or "")
