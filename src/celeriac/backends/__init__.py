"""Result backends by URL scheme (interface layer).

``SCHEMES`` maps a URL scheme to a small function that imports the implementation, so a
backend's module (and its optional library) is imported only when its URL is used.
Third-party backends register a class under the ``celeriac.backends`` entry-point group,
named for their scheme; it is called like the built-in ones.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from importlib.metadata import entry_points
from typing import Any

from celeriac import serialization
from celeriac.backends.base import ResultBackend
from celeriac.exceptions import ImproperlyConfigured
from celeriac.transports import load_scheme, redact_url

ENTRY_POINT_GROUP = "celeriac.backends"

BackendFactory = Callable[..., ResultBackend]
"""Called as ``factory(url, *, serializer, accept, expires, **options)``."""


def _memory() -> BackendFactory:
    from celeriac.backends.memory import MemoryBackend

    return MemoryBackend


def _sqlite() -> BackendFactory:
    from celeriac.backends.sqlite import SQLiteBackend

    return SQLiteBackend


def _redis() -> BackendFactory:
    from celeriac.backends.redis import RedisBackend

    return RedisBackend


def _postgres() -> BackendFactory:
    from celeriac.backends.postgres import PostgresBackend

    return PostgresBackend


def _rpc() -> BackendFactory:
    from celeriac.backends.rpc import RPCBackend

    return RPCBackend


SCHEMES: dict[str, Callable[[], BackendFactory]] = {
    "memory": _memory,
    "cache+memory": _memory,
    "sqlite": _sqlite,
    "db+sqlite": _sqlite,
    "redis": _redis,
    "rediss": _redis,
    "redis+socket": _redis,
    "sentinel": _redis,
    "postgresql": _postgres,
    "postgres": _postgres,
    "db+postgresql": _postgres,
    "db+postgresql+psycopg": _postgres,
    "db+postgresql+psycopg2": _postgres,
    "rpc": _rpc,
}


def from_url(
    url: str,
    *,
    serializer: str = "json",
    accept: Collection[str] | None = None,
    expires: float | None = 86400.0,
    **options: Any,
) -> ResultBackend:
    """Build the result backend a URL names.

    Raises:
        ImproperlyConfigured: no built-in or plugin backend handles the URL's scheme.
    """
    factory = _find_factory(url)
    return factory(url, serializer=serializer, accept=accept, expires=expires, **options)


def accepted_content_types(serializer: str, accept: Collection[str] | None) -> frozenset[str]:
    """Return the content types a backend reads back: ``accept``, or else its own serializer's.

    Raises:
        ImproperlyConfigured: an unknown serializer name.
    """
    serialization.get_codec(serializer)
    return serialization.normalize_accept([serializer] if accept is None else accept)


def _find_factory(url: str) -> BackendFactory:
    scheme = url.partition("://")[0].strip().lower()
    import_backend = SCHEMES.get(scheme)
    if import_backend is not None:
        return load_scheme(import_backend, url, "result backend")
    for entry_point in entry_points(group=ENTRY_POINT_GROUP, name=scheme):
        factory: BackendFactory = entry_point.load()
        return factory
    known = ", ".join(sorted(SCHEMES))
    raise ImproperlyConfigured(
        f"No result backend for scheme {scheme!r} in {redact_url(url)!r}; "
        f"built-in schemes are {known}, others come from {ENTRY_POINT_GROUP!r} entry points"
    )
