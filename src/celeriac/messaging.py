"""A minimal message Producer on top of a Transport (services layer).

Seed 003's ``EventDispatcher.publish(..., producer)`` and seed 004's
``apply_async(producer=...)`` take a kombu-style producer of which "only the publish method
will be called". :class:`Producer` is that object for celeriac's transports: it serializes
the body, builds an :class:`~celeriac.protocol.envelope.Envelope` and hands it to the
transport, broadcasting on the fanout exchanges (events, remote control) and queueing
everything else under its routing key. It does no I/O of its own and holds no mutable
state, so one instance may be shared by threads when its transport may.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from celeriac.protocol.envelope import Envelope
from celeriac.serialization import compress, dumps
from celeriac.transports.base import Transport, TransportError, clamp_priority

__all__ = ["DEFAULT_RETRY_POLICY", "Producer", "retry_over_time"]

PERSISTENT_DELIVERY_MODE = 2

#: Used for the keys a ``retry_policy`` leaves out (Celery's names and meanings).
DEFAULT_RETRY_POLICY: Mapping[str, Any] = MappingProxyType(
    {"max_retries": 3, "interval_start": 0.0, "interval_step": 0.2, "interval_max": 0.2}
)

ErrorCallback = Callable[[TransportError, float], object]


def retry_over_time(
    operation: Callable[[], None],
    retry_policy: Mapping[str, Any] | None = None,
    *,
    errback: ErrorCallback | None = None,
    sleep: Callable[[float], object] = time.sleep,
) -> None:
    """Call ``operation`` again while it raises TransportError, as a Celery retry policy says.

    ``max_retries`` counts the attempts after the first (None: retry forever); the wait
    starts at ``interval_start`` seconds and grows by ``interval_step`` up to
    ``interval_max``. ``errback(exc, interval)`` is told of each failure that will be retried.

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
        except TransportError as exc:
            if max_retries is not None and retries >= max_retries:
                raise
            if errback is not None:
                errback(exc, interval)
            sleep(interval)
            retries += 1
            interval = min(interval + float(policy["interval_step"]), float(policy["interval_max"]))
        else:
            return


class Producer:
    """Publish messages through a Transport, with kombu's ``Producer.publish`` parameters.

    Args:
        transport: where messages go.
        serializer: the default serializer name for bodies.
        broadcast_exchanges: exchanges that fan out to every subscriber; a message for one
            of them is broadcast on the channel of that name instead of queued.
        on_publish_error: called as ``(exc, interval)`` before each retry of a failed publish.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        serializer: str = "json",
        broadcast_exchanges: Collection[str] = ("celeryev", "celery.pidbox"),
        on_publish_error: ErrorCallback | None = None,
    ) -> None:
        self.transport = transport
        self.serializer = serializer
        self.broadcast_exchanges = frozenset(broadcast_exchanges)
        self.on_publish_error = on_publish_error

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
        to the queue named by ``routing_key``, held until ``eta`` (a Unix time) if given.
        ``expiration`` is in seconds. ``mandatory``, ``immediate`` and ``declare`` are
        accepted for kombu compatibility: transports create queues and channels on use.
        Extra keyword arguments (``correlation_id``, ``reply_to``, ...) become properties.

        Raises:
            TransportError: the transport failed (after the retries, with ``retry``).
            ValueError: no routing key names the queue of a non-broadcast message.
            TypeError: ``content_type`` was given with a body that is not bytes or text.
        """
        exchange_name = exchange or ""
        is_broadcast = exchange_name in self.broadcast_exchanges
        if not is_broadcast and not routing_key:
            raise ValueError("publishing to a queue needs its name as routing_key")
        payload, content_type, content_encoding = self._encode(
            body, content_type, content_encoding, serializer or self.serializer
        )
        message_headers = dict(headers or {})
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

        def send() -> None:
            if is_broadcast:
                self.transport.broadcast(exchange_name, envelope)
            else:
                self.transport.publish(
                    routing_key or "", envelope, priority=clamp_priority(priority), eta=eta
                )

        if retry:
            retry_over_time(send, retry_policy, errback=self.on_publish_error)
        else:
            send()

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
