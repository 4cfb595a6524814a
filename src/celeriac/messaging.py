"""The message Producer on top of a Transport (services layer).

Seed 003's ``EventDispatcher.publish(..., producer)`` and seed 004's
``apply_async(producer=...)`` take a kombu-style producer of which "only the publish method
will be called". :class:`Producer` is that object for celeriac's transports: it serializes
the body (or sends bytes exactly as given), builds an
:class:`~celeriac.protocol.envelope.Envelope` and hands it to the transport, broadcasting on
the fanout exchanges (events, remote control) and queueing everything else in the queues its
exchange and routing key are bound to. It does no I/O of its own and holds no mutable
state, so one instance may be shared by threads when its transport may.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from celeriac.exceptions import QueueNotFound
from celeriac.protocol.envelope import Envelope
from celeriac.serialization import compress, dumps
from celeriac.transports.base import (
    BrokerRefused,
    OutgoingMessage,
    Transport,
    TransportError,
    clamp_priority,
)

__all__ = [
    "DEFAULT_RETRY_POLICY",
    "Bindings",
    "Producer",
    "retry_over_time",
    "retry_publish",
    "transport_of",
]

PERSISTENT_DELIVERY_MODE = 2

#: Used for the keys a ``retry_policy`` leaves out (Celery's names and meanings).
DEFAULT_RETRY_POLICY: Mapping[str, Any] = MappingProxyType(
    {"max_retries": 3, "interval_start": 0.0, "interval_step": 0.2, "interval_max": 0.2}
)

ErrorCallback = Callable[[TransportError, float], object]

Bindings = Callable[[str, str], Sequence[str]]
"""``(exchange, routing_key) -> queue names``: where a message for a named exchange lands."""


def transport_of(handle: Any) -> Transport:
    """The Transport behind a Connection, Channel or Producer, or the Transport itself.

    Raises:
        TypeError: ``handle`` is none of those.
    """
    if isinstance(handle, Transport):
        return handle
    transport = getattr(handle, "transport", None)
    if isinstance(transport, Transport):
        return transport
    raise TypeError(f"not a broker connection, channel or producer: {handle!r}")


def retry_over_time(
    operation: Callable[[], object],
    retry_policy: Mapping[str, Any] | None = None,
    *,
    errback: ErrorCallback | None = None,
    sleep: Callable[[float], object] | None = None,
) -> None:
    """Call ``operation`` again while it raises TransportError, as a Celery retry policy says.

    A ``BrokerRefused`` (wrong credentials, say) is raised at once: retrying cannot help.

    ``max_retries`` counts the attempts after the first (None: retry forever); the wait
    starts at ``interval_start`` seconds and grows by ``interval_step`` up to
    ``interval_max``. ``errback(exc, interval)`` is told of each failure that will be retried.
    ``sleep`` is ``time.sleep`` looked up at each pause, so that a process patched for
    gevent after this module was imported pauses only the waiting greenlet.

    Raises:
        TransportError: the last failure, once ``max_retries`` retries have failed too.
    """
    policy = {**DEFAULT_RETRY_POLICY, **(retry_policy or {})}
    max_retries: int | None = policy["max_retries"]
    interval = float(policy["interval_start"])
    retries = 0
    while True:
        try:
            operation()
        except BrokerRefused:
            raise
        except TransportError as exc:
            if max_retries is not None and retries >= max_retries:
                raise
            if errback is not None:
                errback(exc, interval)
            (sleep or time.sleep)(interval)
            retries += 1
            interval = min(interval + float(policy["interval_step"]), float(policy["interval_max"]))
        else:
            return


def retry_publish(
    publish: Callable[[], object],
    retry_policy: Mapping[str, Any] | None = None,
    *,
    errback: ErrorCallback | None = None,
) -> None:
    """Publish under a retry policy; past it, say how many attempts were made and for how long.

    The time this takes is bounded by the policy and the transport's connect and socket
    timeouts: ``max_retries + 1`` attempts, each at most about one timeout, plus the
    pauses between them.

    Raises:
        BrokerRefused: at once, from the first refusal.
        TransportError: the last failure, its message naming the broker (password
            masked), the attempts and the seconds spent.
    """
    started = time.monotonic()
    attempts = 0

    def attempt() -> None:
        nonlocal attempts
        attempts += 1
        publish()

    try:
        retry_over_time(attempt, retry_policy, errback=errback)
    except BrokerRefused:
        raise
    except TransportError as exc:
        elapsed = time.monotonic() - started
        raise TransportError(
            f"{exc} (gave up after {attempts} attempts in {elapsed:.1f} s)"
        ) from exc


class Producer:
    """Publish messages through a Transport, with kombu's ``Producer.publish`` parameters.

    Args:
        transport: where messages go (or a Connection or Channel).
        exchange: the exchange of messages published without one.
        routing_key: the routing key of messages published without one.
        serializer: the default serializer name for bodies.
        compression: the default compression of bodies.
        broadcast_exchanges: exchanges that fan out to every subscriber; a message for one
            of them is broadcast on the channel of that name instead of queued.
        on_publish_error: called as ``(exc, interval)`` before each retry of a failed publish.
        bindings: the queues bound to a named exchange; without it (or for the default
            exchange ``''``) the routing key names the queue.
        connection: the Connection the producer belongs to, if any.
        on_release: called with the producer by :meth:`release` (pools set it).
    """

    def __init__(
        self,
        transport: Any,
        exchange: str | None = None,
        routing_key: str | None = None,
        *,
        serializer: str | None = None,
        compression: str | None = None,
        broadcast_exchanges: Collection[str] = ("celeryev", "celery.pidbox"),
        on_publish_error: ErrorCallback | None = None,
        bindings: Bindings | None = None,
        connection: Any = None,
        on_release: Callable[[Producer], object] | None = None,
    ) -> None:
        self.transport = transport_of(transport)
        self.exchange = exchange or ""
        self.routing_key = routing_key
        self.serializer = serializer or "json"
        self.compression = compression
        self.broadcast_exchanges = frozenset(broadcast_exchanges)
        self.on_publish_error = on_publish_error
        self.bindings = bindings
        self.connection = connection if connection is not None else _connection_of(transport)
        self.on_release = on_release

    @property
    def channel(self) -> Any:
        """The default channel of the producer's connection (kombu's attribute)."""
        return getattr(self.connection, "default_channel", None)

    def release(self) -> None:
        """Give the producer back to the pool it came from; nothing to do otherwise."""
        if self.on_release is not None:
            self.on_release(self)

    close = release

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def publish(
        self,
        body: Any,
        routing_key: str | None = None,
        delivery_mode: int | None = None,
        mandatory: bool = False,
        immediate: bool = False,
        priority: int | None = 0,
        content_type: str | None = None,
        content_encoding: str | None = None,
        serializer: str | None = None,
        headers: Mapping[str, Any] | None = None,
        compression: str | None = None,
        exchange: str | None = None,
        retry: bool = False,
        retry_policy: Mapping[str, Any] | None = None,
        declare: Sequence[Any] | None = None,
        expiration: float | None = None,
        eta: float | None = None,
        **properties: Any,
    ) -> None:
        """Send one message.

        With ``content_type`` the body must already be bytes or text and is sent as it is;
        otherwise it is serialized with ``serializer`` (default: the producer's). A message
        for a broadcast exchange goes to every subscriber of that channel; any other goes
        to the queues bound to ``exchange`` under ``routing_key`` (for the default exchange,
        the queue named ``routing_key``), held until ``eta`` (a Unix time) if given.
        ``expiration`` is in seconds. ``mandatory``, ``immediate`` and ``declare`` are
        accepted for kombu compatibility: transports create queues and channels on use.
        Extra keyword arguments (``correlation_id``, ``reply_to``, ...) become properties.

        Raises:
            TransportError: the transport failed (after the retries, with ``retry``).
            QueueNotFound: no queue is bound to the exchange under the routing key.
            TypeError: ``content_type`` was given with a body that is not bytes or text.
        """
        exchange_name = self.exchange if exchange is None else exchange
        routing_key = self.routing_key if routing_key is None else routing_key
        is_broadcast = exchange_name in self.broadcast_exchanges
        queues = () if is_broadcast else self._queues_for(exchange_name, routing_key or "")
        payload, content_type, content_encoding = self._encode(
            body, content_type, content_encoding, serializer or self.serializer
        )
        message_headers = dict(headers or {})
        compression = compression or self.compression
        if compression:
            payload, message_headers["compression"] = compress(payload, compression)
        message_properties: dict[str, Any] = {
            **properties,
            "delivery_mode": delivery_mode or PERSISTENT_DELIVERY_MODE,
            "priority": clamp_priority(priority),
            "delivery_info": {"exchange": exchange_name, "routing_key": routing_key or ""},
        }
        if expiration is not None:
            # AMQP carries the TTL as a string of milliseconds (wire protocol §2.1).
            message_properties["expiration"] = str(int(max(expiration, 0.0) * 1000))
        envelope = Envelope(
            body=payload,
            content_type=content_type,
            content_encoding=content_encoding,
            headers=message_headers,
            properties=message_properties,
        )

        level = clamp_priority(priority)

        def send() -> None:
            if is_broadcast:
                self.transport.broadcast(exchange_name, envelope)
            elif len(queues) == 1:
                self.transport.publish(queues[0], envelope, priority=level, eta=eta)
            else:
                self.transport.publish_many(
                    [OutgoingMessage(queue, envelope, level, eta) for queue in queues]
                )

        if retry:
            retry_publish(send, retry_policy, errback=self.on_publish_error)
        else:
            send()

    def _queues_for(self, exchange: str, routing_key: str) -> Sequence[str]:
        if exchange and self.bindings is not None:
            queues = self.bindings(exchange, routing_key)
        else:
            queues = [routing_key] if routing_key else []
        if not queues:
            raise QueueNotFound(
                f"no queue is bound to exchange {exchange!r} with routing key {routing_key!r}"
            )
        return queues

    @staticmethod
    def _encode(
        body: Any, content_type: str | None, content_encoding: str | None, serializer: str
    ) -> tuple[bytes, str, str]:
        """Return the payload bytes with their content type and encoding."""
        if content_type is None:
            content_type, content_encoding, payload = dumps(body, serializer)
            return payload, content_type, content_encoding
        if isinstance(body, str):
            content_encoding = content_encoding or "utf-8"
            return body.encode(content_encoding), content_type, content_encoding
        if isinstance(body, bytes | bytearray | memoryview):
            # Raw bytes of unknown text encoding are binary, as kombu labels them.
            return bytes(body), content_type, content_encoding or "binary"
        raise TypeError(
            f"a body sent with content_type={content_type!r} must be bytes or str, "
            f"not {type(body).__name__}"
        )


def _connection_of(handle: Any) -> Any:
    """The Connection a Channel or Connection handle belongs to, or None for a Transport."""
    if isinstance(handle, Transport):
        return None
    return getattr(handle, "connection", handle)
