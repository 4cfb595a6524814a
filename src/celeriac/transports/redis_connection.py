"""Build the redis-py client for a Redis broker URL and its options (edge layer).

Kept apart from ``redis.py`` so the URL schemes and connection options read in one
place. Schemes: ``redis://`` and ``rediss://`` (TLS) as redis-py reads them,
``redis+socket:///path/to/redis.sock`` (a Unix socket; ``?db=N`` picks the database) and
``sentinel://[:password@]host:port[/db][;sentinel://host:port...]`` (redis-py's Sentinel;
the ``master_name`` option names the monitored master, ``sentinel_kwargs`` configures
the connections to the sentinels themselves).

A Sentinel-managed connection asks the sentinels, at most ten times a second as it sends,
which server is master; when that moved (a ``SENTINEL FAILOVER`` leaves the old master
answering, and writable, until the sentinels demote it, up to ten seconds later) it drops
its socket and raises ``ConnectionError``, so the write is retried on the new master
instead of being lost with the old master's data.

Every socket has a bound: ``socket_connect_timeout`` (kombu's ``connect_timeout`` is
accepted for it) and ``socket_timeout`` default to the values below whatever redis-py's
own defaults are, so a client never waits without end on a broker that accepts TCP
connections and never answers. Pass None explicitly to wait without a bound.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.sentinel import Sentinel, SentinelManagedConnection, SentinelManagedSSLConnection

from celeriac.exceptions import ImproperlyConfigured
from celeriac.transports import redact_url
from celeriac.transports.base import BrokerRefused, TransportError

__all__ = [
    "CONNECTION_OPTIONS",
    "DEFAULT_SOCKET_TIMEOUT",
    "TLS_OPTIONS",
    "broker_errors",
    "connect_client",
    "connection_settings",
    "master_moves",
]

DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379
DEFAULT_MAX_CONNECTIONS = 100
# Celery's broker_connection_timeout, and redis-py 6's socket timeout (redis-py 5 has none).
DEFAULT_SOCKET_CONNECT_TIMEOUT = 4.0
DEFAULT_SOCKET_TIMEOUT = 5.0
MASTER_CHECK_INTERVAL = 0.1
POOL_OPTIONS = frozenset({"max_connections", "pool_timeout"})
CONNECTION_OPTIONS = frozenset(
    {
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "socket_keepalive_options",
        "retry_on_timeout",
        "health_check_interval",
        "client_name",
        "username",
        "password",
    }
)
"""Transport options handed to redis-py's connections as they are."""
TLS_OPTIONS = frozenset(
    {
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_ca_data",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_password",
        "ssl_check_hostname",
        "ssl_min_version",
        "ssl_ciphers",
    }
)
"""Transport options for ``rediss://`` (and TLS to a Sentinel-managed master)."""


def waiting_pool(url: str, settings: Mapping[str, Any], options: Mapping[str, Any]) -> Any:
    """A connection pool for ``url`` whose callers past ``max_connections`` wait their turn.

    redis-py's own pool raises once 100 connections are out, which a green pool of 500
    tasks reaches at once; here they wait for a free connection (up to ``pool_timeout``
    seconds, default 20) instead.

    Raises:
        ValueError, TypeError: the URL or an option is malformed.
    """
    connection = {name: value for name, value in settings.items() if name not in POOL_OPTIONS}
    return redis.BlockingConnectionPool.from_url(
        url,
        max_connections=int(options.get("max_connections") or DEFAULT_MAX_CONNECTIONS),
        timeout=float(options.get("pool_timeout", 20.0)),
        **connection,
    )


def connection_settings(options: Mapping[str, Any]) -> dict[str, Any]:
    """The redis-py connection options among ``options``, with the socket timeouts bounded."""
    settings = {name: value for name, value in options.items() if name in CONNECTION_OPTIONS}
    connect_timeout = options.get("connect_timeout", DEFAULT_SOCKET_CONNECT_TIMEOUT)
    settings.setdefault("socket_connect_timeout", connect_timeout)
    settings.setdefault("socket_timeout", DEFAULT_SOCKET_TIMEOUT)
    return settings


def connect_client(url: str, options: Mapping[str, Any]) -> redis.Redis:
    """Return a client for ``url``; no connection is made until the first command."""
    scheme = url.partition("://")[0]
    settings = connection_settings(options)
    if scheme == "rediss" or (scheme == "sentinel" and options.get("ssl")):
        settings.update((name, value) for name, value in options.items() if name in TLS_OPTIONS)
    if scheme == "sentinel":
        return _sentinel_client(url, settings, options)
    if scheme == "redis+socket":
        url = "unix" + url.removeprefix(scheme)
    elif scheme not in ("redis", "rediss"):
        raise ImproperlyConfigured(f"not a Redis URL: {redact_url(url)}")
    try:
        pool = waiting_pool(url, settings, options)
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(f"bad Redis broker URL {redact_url(url)}: {exc}") from exc
    return redis.Redis(connection_pool=pool)


def _sentinel_client(url: str, settings: dict[str, Any], options: Mapping[str, Any]) -> redis.Redis:
    """Return a client of the master that the sentinels in ``url`` name ``master_name``."""
    master_name = options.get("master_name")
    if not master_name:
        raise ImproperlyConfigured(
            f"{redact_url(url)}: a sentinel:// URL needs the option master_name"
            " (in broker_transport_options, or result_backend_transport_options)"
        )
    sentinels: list[tuple[str, int]] = []
    for part in url.split(";"):
        try:
            parts = urlsplit(part.strip())
            sentinels.append((parts.hostname or "localhost", parts.port or DEFAULT_SENTINEL_PORT))
        except ValueError as exc:
            raise ImproperlyConfigured(f"bad sentinel URL {redact_url(part)}: {exc}") from exc
        if parts.password and "password" not in settings:
            settings["password"] = parts.password
        if parts.username and "username" not in settings:
            settings["username"] = parts.username
        database = parts.path.strip("/")
        if database.isdigit():
            settings.setdefault("db", int(database))
    if options.get("max_connections") is not None:
        settings["max_connections"] = int(options["max_connections"])
    sentinel = Sentinel(sentinels, sentinel_kwargs=options.get("sentinel_kwargs"), **settings)
    is_tls = bool(options.get("ssl"))
    client: redis.Redis = sentinel.master_for(
        str(master_name),
        connection_class=_FollowingSSLConnection if is_tls else _FollowingConnection,
        master_check=_MasterCheck(sentinel, str(master_name)),
    )
    return client


class _MasterCheck:
    """Shared by a pool's connections: the master the sentinels last named, asked again
    once ``interval`` seconds have passed; ``moves`` counts the changes seen."""

    def __init__(
        self, sentinel: Sentinel, master_name: str, interval: float = MASTER_CHECK_INTERVAL
    ) -> None:
        self.sentinel = sentinel
        self.master_name = master_name
        self.interval = interval
        self.address: tuple[str, int] | None = None
        self.moves = 0
        self._next = 0.0
        self._lock = threading.Lock()

    def master(self, *, refresh: bool = False) -> tuple[str, int] | None:
        """The master's address (asked now with ``refresh``), or None while no sentinel
        has answered."""
        with self._lock:
            now = time.monotonic()
            is_due = refresh or now >= self._next
            if is_due:
                self._next = now + self.interval
        named = self._ask() if is_due else None
        if named is not None and named != self.address:
            if self.address is not None:
                self.moves += 1
            self.address = named
        return self.address

    def _ask(self) -> tuple[str, int] | None:
        """The master the first sentinel to answer names; None if none answers, so that
        unreachable sentinels do not fail the commands of a master that works."""
        for client in self.sentinel.sentinels:
            try:
                named: Any = client.sentinel_get_master_addr_by_name(self.master_name)
            except redis.RedisError:
                continue
            if named:
                host, port = named
                return host.decode() if isinstance(host, bytes) else str(host), int(port)
        return None


class _FollowingConnection(SentinelManagedConnection):
    """A connection to the master that leaves a master the sentinels no longer name."""

    def __init__(self, *, master_check: _MasterCheck, **options: Any) -> None:
        self._master_check = master_check
        super().__init__(**options)  # type: ignore[no-untyped-call]

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if self._sock is not None:
            # The next connect asks the sentinels again, and closes the idle connections.
            here = (self.host, self.port)
            master = self._master_check.master()
            if master is not None and master != here:
                # Confirm first: this connection may have just found the new master.
                master = self._master_check.master(refresh=True)
            if master is not None and master != here:
                self.disconnect()
                raise redis.ConnectionError(
                    f"the sentinels moved the master to {master[0]}:{master[1]}"
                )
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


class _FollowingSSLConnection(_FollowingConnection, SentinelManagedSSLConnection):
    """The TLS variant of :class:`_FollowingConnection`."""


def master_moves(client: redis.Redis) -> int:
    """How many times the sentinels were seen to move the master of a ``sentinel://``
    client (always 0 for other clients): writes to the old one may be lost with it."""
    check = client.connection_pool.connection_kwargs.get("master_check")
    return check.moves if isinstance(check, _MasterCheck) else 0


def _broker_error(url: str, exc: redis.RedisError) -> TransportError:
    """Turn a redis-py error into a TransportError naming the broker without its password.

    A refusal that waiting cannot mend is a ``BrokerRefused`` with what to check: the
    password (``WRONGPASS``, ``NOAUTH``) or the database number (``DB index is out of
    range``).
    """
    shown = redact_url(url)
    detail = str(exc).rstrip(".")
    if isinstance(exc, redis.AuthenticationError):
        return BrokerRefused(
            f"Redis broker {shown}: {detail}; check the user name and password in the URL"
        )
    if isinstance(exc, redis.ResponseError) and "DB index is out of range" in detail:
        return BrokerRefused(
            f"Redis broker {shown}: {detail}; the server has fewer databases, check the"
            " number at the end of the URL"
        )
    return TransportError(f"Redis broker {shown}: {exc}")


@contextmanager
def broker_errors(url: str) -> Iterator[None]:
    """Turn redis-py errors inside into TransportError naming ``url`` without its password."""
    try:
        yield
    except redis.RedisError as exc:
        raise _broker_error(url, exc) from exc
