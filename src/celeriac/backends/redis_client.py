"""Build the redis-py client of a Redis result store URL (edge layer).

``redis://``, ``rediss://`` and ``redis+socket://`` get a waiting connection pool of their
own, configured from ``result_backend_transport_options``. ``sentinel://`` goes through
the broker's Sentinel code (``transports/redis_connection.py``) with the same options
(``master_name``, ``sentinel_kwargs``), so the result store follows the master the
sentinels name after a failover just as the broker does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis

from celeriac.exceptions import ImproperlyConfigured
from celeriac.transports import redact_url
from celeriac.transports.redis_connection import connect_client, waiting_pool

__all__ = ["result_store_client"]

# Connection options taken from result_backend_transport_options; others are ignored, as
# Celery ignores transport options a backend has no use for.
_CONNECTION_OPTIONS = frozenset(
    {
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "socket_keepalive_options",
        "retry_on_timeout",
        "max_connections",
        "health_check_interval",
        "client_name",
        "username",
        "password",
    }
)
_TLS_OPTIONS = frozenset(
    {"ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname"}
)


def _client_url(url: str) -> tuple[str, str | None]:
    """Return the URL redis-py understands, and the ``global_keyprefix`` of its query string."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    keyprefix = next((value for name, value in query if name == "global_keyprefix"), None)
    query = [(name, value) for name, value in query if name != "global_keyprefix"]
    scheme = parts.scheme.lower()
    if scheme == "redis+socket":
        if not parts.path:
            raise ImproperlyConfigured(
                f"Redis result backend URL {redact_url(url)!r} names no socket: "
                "use redis+socket:///path/to/redis.sock"
            )
        query = [("db" if name == "virtual_host" else name, value) for name, value in query]
        # urlunsplit would drop the "//" of a URL without a host, which redis-py needs.
        return f"unix://{parts.path}?{urlencode(query)}", keyprefix
    if scheme not in ("redis", "rediss"):
        raise ImproperlyConfigured(f"not a Redis URL: {redact_url(url)!r}")
    return urlunsplit(parts._replace(query=urlencode(query))), keyprefix


def _connection_options(client_url: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Pick redis-py connection options; TLS options need a ``rediss://`` URL."""
    chosen = {name: value for name, value in options.items() if name in _CONNECTION_OPTIONS}
    tls = {name: value for name, value in options.items() if name in _TLS_OPTIONS}
    if tls and not client_url.startswith("rediss:"):
        raise ImproperlyConfigured(
            f"TLS options {sorted(tls)} need a rediss:// result backend URL, "
            f"not {redact_url(client_url)!r}"
        )
    requirement = tls.get("ssl_cert_reqs")
    if isinstance(requirement, str):
        # Celery's settings spell it CERT_REQUIRED; redis-py wants "required".
        tls["ssl_cert_reqs"] = requirement.lower().removeprefix("cert_")
    return chosen | tls


def result_store_client(url: str, options: Mapping[str, Any]) -> tuple[redis.Redis, str | None]:
    """Return a client for the result store at ``url`` and the URL's ``global_keyprefix``.

    No connection is made until the first command.

    Raises:
        ImproperlyConfigured: the URL or an option is malformed, or a ``sentinel://`` URL
            came without the ``master_name`` option.
    """
    if url.partition("://")[0].strip().lower() == "sentinel":
        return connect_client(url, options), None
    client_url, keyprefix = _client_url(url)
    connection_options = _connection_options(client_url, options)
    try:
        pool = waiting_pool(client_url, connection_options, options)
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(
            f"bad Redis result backend URL {redact_url(url)!r}: {exc}"
        ) from exc
    return redis.Redis(connection_pool=pool), keyprefix
