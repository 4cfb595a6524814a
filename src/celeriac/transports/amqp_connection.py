"""Open a py-amqp connection for a RabbitMQ broker URL and its options (edge layer).

Kept apart from ``amqp.py`` so the URL forms and connection options read in one place.
URLs: ``amqp://user:password@host:port/vhost``, ``amqps://`` (TLS, port 5671 by default)
and ``pyamqp://`` (kombu's name for the same). The virtual host is the path without its
first slash, URL-decoded: ``amqp://host//`` and ``amqp://host/%2F`` are ``/``, and an
empty path is ``/`` too.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import amqp

from celeriac.exceptions import ImproperlyConfigured
from celeriac.transports import redact_url
from celeriac.transports.base import BrokerRefused, TransportError

__all__ = ["ConnectionSettings", "connection_error", "open_connection", "parse_settings"]

SCHEMES = ("amqp", "amqps", "pyamqp")
DEFAULT_PORT = 5672
DEFAULT_TLS_PORT = 5671
DEFAULT_CONNECT_TIMEOUT = 4.0
DEFAULT_HEARTBEAT = 60.0
# A synchronous reply (declare-ok, consume-ok) slower than this means the broker is gone.
DEFAULT_OPERATION_TIMEOUT = 30.0


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
    connection_name: str


def parse_settings(url: str, options: Mapping[str, Any]) -> ConnectionSettings:
    """Read the URL and the options ``ssl``, ``login_method``, ``connect_timeout``,
    ``heartbeat``, ``operation_timeout`` and ``connection_name``.

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
        operation_timeout=float(options.get("operation_timeout") or DEFAULT_OPERATION_TIMEOUT),
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
