"""Build the redis-py client for a Redis broker URL and its options (edge layer).

Kept apart from ``redis.py`` so the URL schemes and connection options read in one
place. Schemes: ``redis://`` and ``rediss://`` (TLS) as redis-py reads them,
``redis+socket:///path/to/redis.sock`` (a Unix socket; ``?db=N`` picks the database) and
``sentinel://[:password@]host:port[/db][;sentinel://host:port...]`` (redis-py's Sentinel;
the ``master_name`` option names the monitored master, ``sentinel_kwargs`` configures
the connections to the sentinels themselves).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.sentinel import Sentinel

from celeriac.exceptions import ImproperlyConfigured
from celeriac.transports import redact_url
from celeriac.transports.base import BrokerRefused, TransportError

__all__ = ["CONNECTION_OPTIONS", "TLS_OPTIONS", "broker_errors", "connect_client"]

DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379
DEFAULT_MAX_CONNECTIONS = 100
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


def connect_client(url: str, options: Mapping[str, Any]) -> redis.Redis:
    """Return a client for ``url``; no connection is made until the first command."""
    scheme = url.partition("://")[0]
    settings = {name: value for name, value in options.items() if name in CONNECTION_OPTIONS}
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
            f"{redact_url(url)}: a sentinel:// broker needs the transport option master_name"
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
    client: redis.Redis = sentinel.master_for(str(master_name), ssl=bool(options.get("ssl")))
    return client


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
