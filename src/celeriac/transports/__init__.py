"""Brokers by URL scheme: the table, ``connect(url)`` and URL redaction (interface layer).

``SCHEMES`` maps a scheme to a small function that imports its implementation, so an
implementation and its optional dependencies are imported only when a URL uses it;
``import celeriac`` imports none. A new broker is one module and one line here.
Third-party packages add schemes through the ``celeriac.transports`` entry-point group
(the entry point's name is the scheme, its object the transport class), looked up only
for schemes the table does not know.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from celeriac.exceptions import ImproperlyConfigured
from celeriac.transports.base import Transport

__all__ = [
    "ENTRY_POINT_GROUP",
    "EXTRAS",
    "SCHEMES",
    "TransportFactory",
    "connect",
    "load_scheme",
    "redact_url",
]

ENTRY_POINT_GROUP = "celeriac.transports"
PASSWORD_MASK = "****"

EXTRAS = {"redis": "redis", "amqp": "amqp", "psycopg": "postgres"}
"""The optional packages of the built-in brokers and result stores, and the extras
(``pip install 'celeriac[redis]'``) that install them."""

Loaded = TypeVar("Loaded")

TransportFactory = Callable[..., Transport]
"""A transport class: called with the URL and the ``broker_transport_options``."""


def _memory() -> TransportFactory:
    from celeriac.transports.memory import MemoryTransport

    return MemoryTransport


def _sqlite() -> TransportFactory:
    from celeriac.transports.sqlite import SQLiteTransport

    return SQLiteTransport


def _redis() -> TransportFactory:
    from celeriac.transports.redis import RedisTransport

    return RedisTransport


def _amqp() -> TransportFactory:
    from celeriac.transports.amqp import AmqpTransport

    return AmqpTransport


SCHEMES: dict[str, Callable[[], TransportFactory]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "redis": _redis,
    "rediss": _redis,
    "redis+socket": _redis,
    "sentinel": _redis,
    "amqp": _amqp,
    "amqps": _amqp,
    "pyamqp": _amqp,
}


def connect(url: str, **options: Any) -> Transport:
    """Open a transport for ``url``; ``options`` are the app's ``broker_transport_options``.

    Raises:
        ImproperlyConfigured: no built-in transport or installed plugin has the URL's scheme.
    """
    scheme = url.partition("://")[0]
    importer = SCHEMES.get(scheme)
    factory = load_scheme(importer, url, "broker") if importer is not None else _plugin(scheme)
    if factory is None:
        known = ", ".join(sorted({*SCHEMES, *_plugin_schemes()}))
        raise ImproperlyConfigured(
            f"no broker transport for scheme {scheme!r} in {redact_url(url)};"
            f" known schemes: {known}"
        )
    return factory(url, **options)


def load_scheme(importer: Callable[[], Loaded], url: str, role: str) -> Loaded:
    """Call a scheme's import function; a missing optional package names its extra.

    Raises:
        ImproperlyConfigured: the implementation needs a package that is not installed,
            said in one line with the ``pip install`` command that adds it.
    """
    try:
        return importer()
    except ModuleNotFoundError as exc:
        package = (exc.name or "").partition(".")[0]
        extra = EXTRAS.get(package)
        if extra is None:
            raise
        # One line is the whole story: the import's own traceback would only bury it.
        raise ImproperlyConfigured(
            f"The {role} {redact_url(url)} needs the {package!r} package, which is not"
            f" installed: pip install 'celeriac[{extra}]'"
        ) from None


def redact_url(url: str) -> str:
    """Return ``url`` with its password masked, for logs and error messages.

    ``redis://:secret@host/0`` becomes ``redis://:****@host/0``; a URL without a password
    is returned unchanged, and each URL of a ``;``-separated list is masked.
    """
    if ";" in url:
        return ";".join(redact_url(part) for part in url.split(";"))
    scheme, separator, rest = url.partition("://")
    userinfo, at, location = rest.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    if not separator or not at or not colon or "/" in user:
        return url
    return f"{scheme}://{user}:{PASSWORD_MASK}@{location}"


def _plugin(scheme: str) -> TransportFactory | None:
    """Load the transport an installed package registers for ``scheme``, if any."""
    from importlib.metadata import entry_points

    for entry_point in entry_points(group=ENTRY_POINT_GROUP, name=scheme):
        return cast(TransportFactory, entry_point.load())
    return None


def _plugin_schemes() -> list[str]:
    from importlib.metadata import entry_points

    return [entry_point.name for entry_point in entry_points(group=ENTRY_POINT_GROUP)]
