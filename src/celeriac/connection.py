"""Broker connections and the pools that lend them, by kombu's and Celery's names (services).

A :class:`Connection` is one type whatever the broker: it opens the transport its URL names
(``celeriac.transports.connect``) on first use and closes it on ``release()``. Celery code
written against kombu (``with app.connection_for_write() as conn:``, ``conn.Producer()``,
``conn.ensure_connection(max_retries=3)``, ``EventDispatcher(conn)``) works on it unchanged.

Transports are thread-safe and pool their sockets themselves, so the app's
:class:`ConnectionPool` lends connections over the app's one transport; its ``limit``
(``broker_pool_limit``) bounds how many are out at once, as kombu's does.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from celeriac.exceptions import OperationalError
from celeriac.messaging import Bindings, Producer, retry_over_time
from celeriac.transports import connect, redact_url
from celeriac.transports.base import Transport, TransportError

__all__ = ["Channel", "Connection", "ConnectionPool", "ProducerPool"]

PROBE_QUEUE = "celery"


class Channel:
    """A channel on a connection; celeriac transports multiplex, so it is a thin view."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    @property
    def transport(self) -> Transport:
        """The connection's transport."""
        return self.connection.transport

    def close(self) -> None:
        """Channels hold nothing of their own; the connection keeps the transport."""

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Connection:
    """A connection to the broker a URL names.

    Args:
        hostname: the broker URL (kombu calls it ``hostname``).
        transport_options: the ``broker_transport_options`` for the transport.
        transport: an open transport to use instead of opening one; it is not closed by
            this connection (pooled connections share the app's transport this way).
        bindings: how messages published to a named exchange find their queues, on brokers
            that do not route by exchange themselves (the app passes its queue bindings).
        pool: the pool the connection is returned to on ``release()``.
    """

    connection_errors: tuple[type[Exception], ...] = (TransportError,)
    channel_errors: tuple[type[Exception], ...] = (TransportError,)
    recoverable_connection_errors: tuple[type[Exception], ...] = (TransportError,)

    def __init__(
        self,
        hostname: str,
        *,
        transport_options: Mapping[str, Any] | None = None,
        transport: Transport | None = None,
        bindings: Bindings | None = None,
        pool: ConnectionPool | None = None,
        **options: Any,
    ) -> None:
        self.hostname = hostname
        self.transport_options = dict(transport_options or {})
        self.bindings = bindings
        self.options = options
        self._transport = transport
        self._owns_transport = transport is None
        self._pool = pool
        self._lock = threading.Lock()
        self._default_channel: Channel | None = None

    @property
    def transport_cls(self) -> str:
        """The transport's name: the URL scheme (``sqlite``, ``redis``, ``amqp``, ...)."""
        return self.hostname.partition("://")[0]

    @property
    def transport(self) -> Transport:
        """The transport behind the connection, opened on first use."""
        if self._transport is None:
            with self._lock:
                if self._transport is None:
                    self._transport = connect(self.hostname, **self.transport_options)
        return self._transport

    @property
    def connected(self) -> bool:
        """True once the transport is open."""
        return self._transport is not None

    def connect(self) -> Connection:
        """Open the transport and make one round trip to the broker.

        Raises:
            TransportError: the broker did not answer.
        """
        self.transport.queue_size(PROBE_QUEUE)
        return self

    def ensure_connection(
        self,
        errback: Callable[[Exception, float], object] | None = None,
        max_retries: int | None = None,
        interval_start: float = 2.0,
        interval_step: float = 2.0,
        interval_max: float = 30.0,
        callback: Callable[[], object] | None = None,
        timeout: float | None = None,
        **_: Any,
    ) -> Connection:
        """Connect, retrying while the broker is unreachable, as kombu's method does.

        ``max_retries`` counts the retries after the first attempt (None: until ``timeout``
        seconds have passed, or forever). ``errback(exc, interval)`` hears of each failure
        before its wait; ``callback()`` is called before each retry.

        Raises:
            OperationalError: the broker still did not answer after the retries or the
                timeout; the message carries the URL with its password masked.
        """
        deadline = None if timeout is None else time.monotonic() + timeout

        def on_failure(exc: TransportError, interval: float) -> None:
            if deadline is not None and time.monotonic() + interval > deadline:
                raise OperationalError(
                    f"cannot connect to {self.as_uri()} within {timeout} s: {exc}"
                ) from exc
            if errback is not None:
                errback(exc, interval)
            if callback is not None:
                callback()
            self._drop_transport()

        policy = {
            "max_retries": max_retries,
            "interval_start": interval_start,
            "interval_step": interval_step,
            "interval_max": interval_max,
        }
        try:
            retry_over_time(self.connect, policy, errback=on_failure)
        except TransportError as exc:
            raise OperationalError(f"cannot connect to {self.as_uri()}: {exc}") from exc
        return self

    def _drop_transport(self) -> None:
        """Close an owned transport that failed, so the next attempt opens a fresh one."""
        if not self._owns_transport:
            return
        with self._lock:
            transport, self._transport = self._transport, None
        if transport is not None:
            with contextlib.suppress(Exception):
                transport.close()

    def ensure(self, obj: object, fun: Callable[..., Any], **policy: Any) -> Callable[..., Any]:
        """Wrap ``fun`` so that a TransportError makes it retry as ``policy`` says."""

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            results: list[Any] = []
            retry_over_time(lambda: results.append(fun(*args, **kwargs)), policy)
            return results[-1]

        return wrapped

    @property
    def default_channel(self) -> Channel:
        """The connection's channel, made on first use."""
        if self._default_channel is None:
            self._default_channel = Channel(self)
        return self._default_channel

    def channel(self) -> Channel:
        """A new channel on the connection."""
        return Channel(self)

    def Producer(self, channel: Any = None, **options: Any) -> Producer:
        """A producer publishing through this connection."""
        options.setdefault("bindings", self.bindings)
        return Producer(self.transport, connection=self, **options)

    def clone(self, **changes: Any) -> Connection:
        """A new, unopened connection to the same broker."""
        settings: dict[str, Any] = {
            "transport_options": self.transport_options,
            "bindings": self.bindings,
            **self.options,
        }
        settings.update(changes)
        return Connection(settings.pop("hostname", self.hostname), **settings)

    def as_uri(self, include_password: bool = False) -> str:
        """The broker URL, with the password masked unless asked for."""
        return self.hostname if include_password else redact_url(self.hostname)

    def release(self) -> None:
        """Give the connection back to its pool, or close it if it is not pooled."""
        if self._pool is not None:
            self._pool.release(self)
        else:
            self.close()

    def close(self) -> None:
        """Close the transport if this connection opened it."""
        if not self._owns_transport:
            return
        with self._lock:
            transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<Connection: {self.as_uri()} at {id(self):#x}>"


class ConnectionPool:
    """Lends connections made by ``factory``, at most ``limit`` at a time (None: no limit).

    Raises from ``acquire``: OperationalError when ``block`` is false (or ``timeout``
    passes) and every connection is out.
    """

    def __init__(self, factory: Callable[[ConnectionPool], Connection], limit: int | None) -> None:
        self.factory = factory
        self.limit = limit
        self._free: list[Connection] = []
        self._slots = threading.BoundedSemaphore(limit) if limit else None
        self._lock = threading.Lock()

    def acquire(self, block: bool = True, timeout: float | None = None) -> Connection:
        """Borrow a connection; ``release()`` it (or use it as a context manager) when done."""
        if self._slots is not None and not self._slots.acquire(block, timeout):
            raise OperationalError(f"all {self.limit} pooled broker connections are in use")
        with self._lock:
            if self._free:
                return self._free.pop()
        return self.factory(self)

    def release(self, connection: Connection) -> None:
        """Take a borrowed connection back."""
        with self._lock:
            self._free.append(connection)
        if self._slots is not None:
            self._slots.release()

    def force_close_all(self) -> None:
        """Close the idle connections (their shared transport stays with its owner)."""
        with self._lock:
            free, self._free = self._free, []
        for connection in free:
            connection.close()


class ProducerPool:
    """Lends producers, each on a connection borrowed from ``connections``."""

    def __init__(self, connections: ConnectionPool, **producer_options: Any) -> None:
        self.connections = connections
        self.producer_options = producer_options
        self.limit = connections.limit

    def create_producer(self, **options: Any) -> Producer:
        """A producer on a pooled connection, outside the pool's accounting."""
        connection = self.connections.factory(self.connections)
        return connection.Producer(**{**self.producer_options, **options})

    def acquire(self, block: bool = True, timeout: float | None = None) -> Producer:
        """Borrow a producer; its ``release()`` gives back the producer and its connection."""
        connection = self.connections.acquire(block, timeout)
        return connection.Producer(on_release=self.release, **self.producer_options)

    def release(self, producer: Producer) -> None:
        """Give a borrowed producer's connection back to the connection pool."""
        if producer.connection is not None:
            producer.connection.release()
