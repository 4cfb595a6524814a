"""EventDispatcher: send monitoring events, exactly as seed 003 describes (services layer).

Events are broadcast on the ``celeryev`` channel of the Transport the dispatcher is
handed, with routing key = type with '-' replaced by '.', envelope headers
``{"hostname": <sender>}`` and delivery mode 1 (wire protocol §4.2, §5). Groups named in
``buffer_group`` are batched into one JSON list under ``<group>.multi`` (``task.multi``).
Events that cannot be sent while the broker is down wait in an outbound buffer until
:meth:`EventDispatcher.flush`. The dispatcher does no I/O of its own.

Events leave in the order their clocks were taken: the clock is forwarded and the event
published or batched under one lock, and an event sent on its own first sends what waits
(the offline buffer, then the batches). So a monitor receives one dispatcher's events in
clock order, as long as the transport keeps the order of one connection's messages.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, ClassVar, Protocol

from celeriac.events.clock import LamportClock
from celeriac.messaging import Producer, transport_of
from celeriac.protocol.event import EVENT_EXCHANGE, Event, group_from, routing_key_for, utcoffset
from celeriac.transports.base import Transport

__all__ = ["EventDispatcher", "EventProducer", "EventsApp", "anon_nodename"]

EventBody = dict[str, Any]
EventFactory = Callable[..., EventBody]
Callback = Callable[[], object]
# One message to publish: a single event or a batch, and its routing key.
Outgoing = tuple[EventBody | list[EventBody], str]
# One in the offline buffer, with the error that kept it (None: taken over untried).
Waiting = tuple[EventBody | list[EventBody], str, Exception | None]


def anon_nodename(hostname: str | None = None, prefix: str = "gen") -> str:
    """Name a process that has no node name of its own: ``gen<pid>@<host>``."""
    return f"{prefix}{os.getpid()}@{hostname or socket.gethostname()}"


class EventsConfig(Protocol):
    """The settings the event services read."""

    @property
    def event_serializer(self) -> str: ...

    @property
    def worker_max_message_size(self) -> int | None: ...


class EventsApp(Protocol):
    """What the event services need from an app: its clock, settings and transport."""

    @property
    def clock(self) -> LamportClock: ...

    @property
    def conf(self) -> EventsConfig: ...

    @property
    def transport(self) -> Transport: ...


class EventProducer(Protocol):
    """Anything with kombu's ``Producer.publish``: the only method the dispatcher calls."""

    def publish(
        self,
        body: Any,
        *,
        routing_key: str,
        exchange: str,
        retry: bool,
        retry_policy: Mapping[str, Any] | None,
        serializer: str,
        headers: Mapping[str, Any],
        delivery_mode: int,
    ) -> object: ...


class EventDispatcher:
    """Dispatches event messages.

    Args:
        connection: the broker connection to send through (a Connection such as
            ``app.connection_for_write()``, or a Transport); defaults to ``channel``, then
            the app's transport.
        hostname: who we are in the events; defaults to :func:`anon_nodename`.
        enabled: False makes :meth:`send` a no-op.
        channel: a channel (or transport) to use instead of ``connection``.
        buffer_while_offline: keep events that could not be published, whatever the
            error, for :meth:`flush` (called once the broker is back, and by every later
            send of an unbatched event) instead of raising.
        app: supplies the shared clock and ``event_serializer``; without one the
            dispatcher keeps its own clock and sends JSON.
        serializer: overrides ``app.conf.event_serializer``.
        groups: only events of these groups (the type before the first '-') are sent;
            None or empty sends all.
        delivery_mode: 1 (transient) as Celery sends events.
        buffer_group: groups whose events are batched and sent as one list.
        buffer_limit: a batch is sent when it holds this many events.
        on_send_buffered: called after an event is batched without filling the batch, so
            the owner can schedule a :meth:`flush` (the worker's heart flushes shortly
            after; Celery's worker does it on the next event-loop tick).

    Thread-safe: the buffers are guarded by a lock, so worker threads may share it.
    You need to :meth:`close` it after use.
    """

    DISABLED_TRANSPORTS: ClassVar[frozenset[str]] = frozenset({"sql"})

    def __init__(
        self,
        connection: Any = None,
        hostname: str | None = None,
        enabled: bool = True,
        channel: Any = None,
        buffer_while_offline: bool = True,
        app: EventsApp | None = None,
        serializer: str | None = None,
        groups: Iterable[str] | None = None,
        delivery_mode: int = 1,
        buffer_group: Iterable[str] | None = None,
        buffer_limit: int = 24,
        on_send_buffered: Callback | None = None,
    ) -> None:
        handle = connection or channel or (app.transport if app is not None else None)
        if handle is None:
            raise ValueError("EventDispatcher needs a connection, a channel or an app")
        transport = transport_of(handle)
        self.app = app
        self.connection: Any = connection if connection is not None else transport
        self.channel = channel
        self.transport: Transport = transport
        self.hostname = hostname or anon_nodename()
        self.buffer_while_offline = buffer_while_offline
        self.serializer = serializer or (app.conf.event_serializer if app else "json")
        self.groups = frozenset(groups or ())
        self.delivery_mode = delivery_mode
        self.buffer_group = frozenset(buffer_group or ())
        self.buffer_limit = buffer_limit
        self.on_send_buffered = on_send_buffered
        self.clock = app.clock if app is not None else LamportClock()
        self.headers = {"hostname": self.hostname}
        self.pid = os.getpid()
        self.on_enabled: set[Callback] = set()
        self.on_disabled: set[Callback] = set()
        self.producer: EventProducer | None = None
        self._outbound_buffer: deque[Waiting] = deque()
        self._group_buffer: defaultdict[str, list[EventBody]] = defaultdict(list)
        self._lock = threading.RLock()
        self.enabled = enabled and _driver_type(transport) not in self.DISABLED_TRANSPORTS
        if self.enabled:
            self.enable()

    def enable(self) -> None:
        """Start sending: create the producer and call the ``on_enabled`` callbacks."""
        self.producer = Producer(self.transport, serializer=self.serializer)
        self.enabled = True
        for callback in self.on_enabled:
            callback()

    def disable(self) -> None:
        """Stop sending: :meth:`close`, then call the ``on_disabled`` callbacks."""
        if self.enabled:
            self.enabled = False
            self.close()
            for callback in self.on_disabled:
                callback()

    def send(
        self,
        type: str,
        blind: bool = False,
        utcoffset: Callable[[], float] = utcoffset,
        retry: bool = False,
        retry_policy: Mapping[str, Any] | None = None,
        Event: EventFactory = Event,
        **fields: Any,
    ) -> None:
        """Send event ``type`` with ``fields``, or batch it if its group is buffered.

        Args:
            type: event type name, with the group before the first dash (``task-sent``).
            blind: don't set the event's clock, and don't forward ours.
            utcoffset: returns the local offset from UTC in hours, west positive.
            retry: retry sending while the transport fails.
            retry_policy: Celery's retry policy keys (max_retries, interval_*).
            Event: builds the event dict.
            **fields: the event's fields; they must be serializable.
        """
        producer = self.producer
        if not self.enabled or producer is None:
            return
        group, routing_key = _names(type)
        if self.groups and group not in self.groups:
            return
        with self._lock:
            if Event is _default_event:
                event = self._fill_event(type, fields, blind, utcoffset)
            else:
                event = self._make_event(type, fields, blind, utcoffset, Event)
            if group not in self.buffer_group:
                # What waits was made earlier, so it goes first: events leave in clock order.
                waiting = [*self._take_waiting(), (event, routing_key)]
                self._send_in_order(waiting, producer, retry, retry_policy)
                return
            batch = self._group_buffer[group]
            batch.append(event)
            is_full = len(batch) >= self.buffer_limit
            if is_full:
                self._send_in_order(self._take_waiting(), producer, False, None)
        if not is_full and self.on_send_buffered is not None:
            self.on_send_buffered()

    def publish(
        self,
        type: str,
        fields: Mapping[str, Any],
        producer: EventProducer,
        blind: bool = False,
        Event: EventFactory = Event,
        *,
        retry: bool = False,
        retry_policy: Mapping[str, Any] | None = None,
        utcoffset: Callable[[], float] = utcoffset,
    ) -> None:
        """Publish event ``type`` with ``fields`` through ``producer`` (only its ``publish``).

        Sends even when the dispatcher is disabled or the group is filtered out: the
        caller chose to publish. Arguments as for :meth:`send`.
        """
        with self._lock:
            event = self._make_event(type, fields, blind, utcoffset, Event)
            self._send_in_order([(event, routing_key_for(type))], producer, retry, retry_policy)

    def flush(self, errors: bool = True, groups: bool = True) -> None:
        """Send what waits: the offline buffer (``errors``), then the batches (``groups``).

        At the first event that fails again, it and those after it go back to the offline
        buffer in their order, untried: the broker is still away. Nothing happens while
        the dispatcher is closed or disabled.
        """
        producer = self.producer
        if producer is None:
            return
        with self._lock:
            self._send_in_order(self._take_waiting(errors, groups), producer, False, None)

    def extend_buffer(self, other: EventDispatcher) -> None:
        """Copy the events another dispatcher holds: its offline buffer, then its batches.

        A replacement for a dispatcher whose connection broke sends them at its next
        :meth:`flush`; the other one keeps its copy, so it should not flush as well.
        """
        with other._lock:
            taken = list(other._outbound_buffer)
            taken += [
                (list(events), f"{group}.multi", None)
                for group, events in other._group_buffer.items()
                if events
            ]
        with self._lock:
            self._outbound_buffer.extend(taken)

    def close(self) -> None:
        """Send what waits, then release the producer; later sends are no-ops.

        What the transport refuses stays in the offline buffer for :meth:`extend_buffer`.
        """
        self.flush()
        self.producer = None
        self.enabled = False

    @property
    def publisher(self) -> EventProducer | None:
        """The producer :meth:`send` publishes with (None once closed)."""
        return self.producer

    @publisher.setter
    def publisher(self, producer: EventProducer | None) -> None:
        self.producer = producer

    def __enter__(self) -> EventDispatcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _make_event(
        self,
        type: str,
        fields: Mapping[str, Any],
        blind: bool,
        utcoffset: Callable[[], float],
        Event: EventFactory,
    ) -> EventBody:
        clock = None if blind else self.clock.forward()
        return Event(
            type,
            hostname=self.hostname,
            utcoffset=utcoffset(),
            pid=self.pid,
            clock=clock,
            **fields,
        )

    def _fill_event(
        self, type: str, fields: dict[str, Any], blind: bool, utcoffset: Callable[[], float]
    ) -> EventBody:
        """Make the event :func:`Event` would, in ``fields`` itself (send's own kwargs dict).

        The hot path of a busy ``-E`` worker: one dict, filled in place.
        """
        fields["hostname"] = self.hostname
        fields["utcoffset"] = utcoffset()
        fields["pid"] = self.pid
        fields["clock"] = None if blind else self.clock.forward()
        if "timestamp" not in fields:
            fields["timestamp"] = time.time()
        fields["type"] = type
        return fields

    def _take_waiting(self, errors: bool = True, groups: bool = True) -> list[Outgoing]:
        """Empty the offline buffer and the batches into one list, oldest first.

        Called with the lock held.
        """
        waiting: list[Outgoing] = []
        if errors:
            waiting += [(event, routing_key) for event, routing_key, _ in self._outbound_buffer]
            self._outbound_buffer.clear()
        if groups:
            for group, events in self._group_buffer.items():
                if events:
                    waiting.append((list(events), f"{group}.multi"))
                    events.clear()
        return waiting

    def _send_in_order(
        self,
        outgoing: list[Outgoing],
        producer: EventProducer,
        retry: bool,
        retry_policy: Mapping[str, Any] | None,
    ) -> None:
        """Publish ``outgoing`` in order; keep what fails, and all after it, for later.

        Called with the lock held. Any error counts, not only TransportError: a producer
        passed to :meth:`publish` may raise what it likes (Celery's dispatcher does the
        same). Without ``buffer_while_offline`` the error is raised, and only the events
        after the failed one are kept.

        Raises:
            Exception: what the producer raised, if ``buffer_while_offline`` is off.
        """
        for index, (body, routing_key) in enumerate(outgoing):
            try:
                producer.publish(
                    body,
                    routing_key=routing_key,
                    exchange=EVENT_EXCHANGE,
                    retry=retry,
                    retry_policy=retry_policy,
                    serializer=self.serializer,
                    headers=self.headers,
                    delivery_mode=self.delivery_mode,
                )
            except Exception as exc:
                kept = outgoing[index:] if self.buffer_while_offline else outgoing[index + 1 :]
                self._outbound_buffer.extend((event, key, exc) for event, key in kept)
                if not self.buffer_while_offline:
                    raise
                return


_default_event = Event


@functools.lru_cache(maxsize=256)
def _names(type: str) -> tuple[str, str]:
    """An event type's group and routing key, worked out once per type, not once per event."""
    return group_from(type), routing_key_for(type)


def _driver_type(transport: Transport) -> str:
    """The URL scheme of a transport, which DISABLED_TRANSPORTS is matched against."""
    return transport.url.partition("://")[0]
