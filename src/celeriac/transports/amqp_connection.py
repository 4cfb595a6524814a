"""Open a py-amqp connection for a RabbitMQ broker URL and its options (edge layer).

Kept apart from ``amqp.py`` so the URL forms and connection options read in one place.
URLs: ``amqp://user:password@host:port/vhost``, ``amqps://`` (TLS, port 5671 by default)
and ``pyamqp://`` (kombu's name for the same). The virtual host is the path without its
first slash, URL-decoded: ``amqp://host//`` and ``amqp://host/%2F`` are ``/``, and an
empty path is ``/`` too.

Every wait has a bound: ``connect_timeout`` covers the TCP connect and the AMQP
handshake, so a port that accepts and never answers fails within it; ``heartbeat``
notices a broker gone silent later; ``operation_timeout`` bounds each synchronous reply
and ``confirm_timeout`` (kombu's name; default: ``operation_timeout``) the wait for
publisher confirms.

Several URLs joined by ``;`` (Celery's ``broker_url = "amqp://a;amqp://b"``) make a
:class:`BrokerList`: a connection goes to the first that answers, and after a lost
connection the next one is tried first, in turn (``failover_strategy="round-robin"``,
Celery's default) or in random order (``"shuffle"``).
"""

from __future__ import annotations

import os
import random
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import amqp

from celeriac.exceptions import ImproperlyConfigured
from celeriac.transports import redact_url
from celeriac.transports.base import BrokerRefused, TransportError

__all__ = [
    "FAILOVER_STRATEGIES",
    "BrokerList",
    "ConnectionSettings",
    "connection_error",
    "open_connection",
    "parse_settings",
]

T = TypeVar("T")

SCHEMES = ("amqp", "amqps", "pyamqp")
DEFAULT_PORT = 5672
DEFAULT_TLS_PORT = 5671
DEFAULT_CONNECT_TIMEOUT = 4.0
DEFAULT_HEARTBEAT = 60.0
# A synchronous reply (declare-ok, consume-ok) slower than this means the broker is gone.
DEFAULT_OPERATION_TIMEOUT = 30.0
FAILOVER_STRATEGIES = ("round-robin", "shuffle")


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """Where and how to connect; built once from the URL and the transport options."""

    url: str
    host: str
    userid: str
    password: str
    virtual_host: str
    ssl: bool | dict[str, Any] | Any
    login_method: str | None
    connect_timeout: float
    heartbeat: float
    operation_timeout: float
    confirm_timeout: float
    connection_name: str


def parse_settings(url: str, options: Mapping[str, Any]) -> ConnectionSettings:
    """Read the URL and the options ``ssl``, ``login_method``, ``connect_timeout``,
    ``heartbeat``, ``operation_timeout``, ``confirm_timeout`` and ``connection_name``.

    ``ssl`` may be True, a dict of ``ssl.wrap_socket``-style options or an SSLContext;
    ``amqps://`` turns it on. ``connection_name`` is shown by ``rabbitmqctl
    list_connections`` and the management UI; by default it names the host, the process
    and this transport.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ImproperlyConfigured(f"bad RabbitMQ broker URL {redact_url(url)}: {exc}") from exc
    if parts.scheme not in SCHEMES:
        raise ImproperlyConfigured(f"not a RabbitMQ URL: {redact_url(url)}")
    is_tls = parts.scheme == "amqps"
    ssl = options.get("ssl") or is_tls
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    default_port = DEFAULT_TLS_PORT if ssl else DEFAULT_PORT
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    operation_timeout = float(options.get("operation_timeout") or DEFAULT_OPERATION_TIMEOUT)
    return ConnectionSettings(
        url=url,
        host=f"{host}:{port or default_port}",
        userid=unquote(parts.username) if parts.username else "guest",
        password=unquote(parts.password) if parts.password else "guest",
        virtual_host=unquote(path) or "/",
        ssl=ssl,
        login_method=options.get("login_method"),
        connect_timeout=float(options.get("connect_timeout") or DEFAULT_CONNECT_TIMEOUT),
        heartbeat=float(options.get("heartbeat", DEFAULT_HEARTBEAT) or 0),
        operation_timeout=operation_timeout,
        confirm_timeout=float(options.get("confirm_timeout") or operation_timeout),
        connection_name=str(
            options.get("connection_name")
            or f"celeriac {socket.gethostname()}:{os.getpid()} {uuid.uuid4().hex[:12]}"
        ),
    )


def open_connection(settings: ConnectionSettings) -> amqp.Connection:
    """Connect and log in; raises what py-amqp and the socket raise."""
    connection = amqp.Connection(
        settings.host,
        userid=settings.userid,
        password=settings.password,
        virtual_host=settings.virtual_host,
        ssl=settings.ssl,
        login_method=settings.login_method,
        connect_timeout=settings.connect_timeout,
        heartbeat=settings.heartbeat,
        read_timeout=settings.operation_timeout,
        write_timeout=settings.operation_timeout,
        client_properties={"connection_name": settings.connection_name},
    )
    connection.connect()
    return connection


def connection_error(url: str, exc: Exception) -> TransportError:
    """Say why connecting to the broker at ``url`` failed, without its password.

    A refusal that waiting cannot mend is a ``BrokerRefused`` with what to check: the
    credentials (``ACCESS_REFUSED``) or the virtual host (``NOT_ALLOWED``).
    """
    shown = redact_url(url)
    if isinstance(exc, amqp.exceptions.AccessRefused):
        hint = "check the user name and password in the URL"
    elif isinstance(exc, amqp.exceptions.NotAllowed):
        hint = "check the virtual host at the end of the URL"
    else:
        return TransportError(f"cannot connect to RabbitMQ broker {shown}: {exc!r}")
    detail = str(exc.reply_text).rstrip(".")
    return BrokerRefused(f"RabbitMQ broker {shown}: {detail}; {hint}")


class BrokerList:
    """The brokers of a ``;``-separated URL, tried in turn when a connection is lost.

    Not thread-safe: the transport calls :meth:`connect` under its lock.
    """

    def __init__(self, url: str, options: Mapping[str, Any]) -> None:
        strategy = options.get("failover_strategy") or "round-robin"
        if strategy not in FAILOVER_STRATEGIES:
            raise ImproperlyConfigured(
                f"failover_strategy must be one of {', '.join(FAILOVER_STRATEGIES)},"
                f" not {strategy!r}"
            )
        self.strategy = strategy
        self.url = url
        urls = [part.strip() for part in url.split(";") if part.strip()]
        if not urls:
            raise ImproperlyConfigured(f"no RabbitMQ URL in {redact_url(url)!r}")
        # One connection name for all: it names this transport, whichever broker it is on.
        first = parse_settings(urls[0], options)
        named = {**options, "connection_name": first.connection_name}
        self.brokers = [first, *(parse_settings(other, named) for other in urls[1:])]
        self.current = first
        self._position = 0

    def connect(self, opener: Callable[[ConnectionSettings], T], *, after_loss: bool) -> T:
        """Return ``opener(settings)`` for the first broker that answers.

        The broker in use is tried first, unless ``after_loss`` (its connection was lost
        or failed), when the next one in the list is.

        Raises:
            TransportError: no broker answered; a ``BrokerRefused`` when every one
                refused this client.
        """
        count = len(self.brokers)
        if after_loss and count > 1:
            self._position = self._following()
        order = [(self._position + step) % count for step in range(count)]
        failures: list[TransportError] = []
        for position in order:
            settings = self.brokers[position]
            try:
                opened = opener(settings)
            except (OSError, amqp.exceptions.AMQPError) as exc:
                failures.append(connection_error(settings.url, exc))
                continue
            self._position = position
            self.current = settings
            return opened
        raise self._failure(failures)

    def _following(self) -> int:
        if self.strategy == "shuffle":
            others = [place for place in range(len(self.brokers)) if place != self._position]
            return random.choice(others)
        return (self._position + 1) % len(self.brokers)

    def _failure(self, failures: list[TransportError]) -> TransportError:
        if len(failures) == 1:
            return failures[0]
        detail = "; ".join(str(failure) for failure in failures)
        if all(isinstance(failure, BrokerRefused) for failure in failures):
            return BrokerRefused(detail)
        return TransportError(f"none of the {len(failures)} RabbitMQ brokers answered: {detail}")
