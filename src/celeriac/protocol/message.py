"""Build and parse Celery protocol 2 task messages (core layer, wire protocol §2.1-2.3, 2.6).

``build_task_message`` makes the Envelope a Celery 5.7 client would send: the same header keys
in the same order, the same properties and a ``[args, kwargs, embed]`` body.
``parse_task_message`` reads the headers only, so the worker's main process can route, check
revocation and expiry without decoding the body; ``TaskMessage.decode_body`` does that once,
where the task runs. Protocol 1 messages are converted on parse (see ``legacy``).
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from celeriac.exceptions import DecodeError, InvalidTaskError
from celeriac.protocol.envelope import Envelope
from celeriac.protocol.legacy import convert_v1_body, is_v1_body
from celeriac.serialization import compress, decompress, dumps, loads

__all__ = ["TaskMessage", "build_task_message", "parse_task_message", "readable_task_id"]

# Celery cuts argsrepr/kwargsrepr to this many characters (task_protocol 2 sender).
REPR_MAX_LENGTH = 1024

_EMBED_KEYS = ("callbacks", "errbacks", "chain", "chord")

DecodedBody = tuple[list[Any], dict[str, Any], dict[str, Any]]

# An eta or expires outside these bounds is refused as absurd: no client means a moment
# before the Unix epoch or more than a century ahead, and such values overflow the time
# arithmetic of brokers and pools (year 1 with an offset, year 9999).
_EARLIEST_MOMENT = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_LONGEST_HORIZON = datetime.timedelta(days=36525)
# Ten years: a longer limit is a mistake, and far longer ones overflow the pools' timers.
_LONGEST_TIME_LIMIT = 10 * 365 * 24 * 3600.0


def build_task_message(
    task_name: str,
    task_id: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    *,
    serializer: str = "json",
    compression: str | None = None,
    eta: datetime.datetime | None = None,
    expires: datetime.datetime | None = None,
    retries: int = 0,
    time_limit: float | None = None,
    soft_time_limit: float | None = None,
    root_id: str | None = None,
    parent_id: str | None = None,
    group_id: str | None = None,
    group_index: int | None = None,
    shadow: str | None = None,
    origin: str | None = None,
    ignore_result: bool | None = False,
    callbacks: list[Any] | None = None,
    errbacks: list[Any] | None = None,
    chain: list[Any] | None = None,
    chord: Any = None,
    reply_to: str = "",
    priority: int = 0,
    delivery_mode: int = 2,
    exchange: str = "",
    routing_key: str = "celery",
    headers: Mapping[str, Any] | None = None,
    replaced_task_nesting: int = 0,
    stamped_headers: list[str] | None = None,
    stamps: Mapping[str, Any] | None = None,
    argsrepr: str | None = None,
    kwargsrepr: str | None = None,
    now: Callable[[], float] = time.time,
) -> Envelope:
    """Build the Envelope of one task message, as Celery 5.7 sends it.

    Naive ``eta``/``expires`` are taken as UTC. ``headers`` are merged over the standard
    ones at top level, as ``apply_async(headers=...)`` does. ``now`` is the clock used for the
    ``expiration`` property.
    """
    message_headers: dict[str, Any] = {
        "lang": "py",
        "task": task_name,
        "id": task_id,
        "shadow": shadow,
        "eta": _isoformat(eta),
        "expires": _isoformat(expires),
        "group": group_id,
        "group_index": group_index,
        "retries": retries,
        "timelimit": [time_limit, soft_time_limit],
        "root_id": root_id or task_id,
        "parent_id": parent_id,
        "argsrepr": _cut(repr(tuple(args))) if argsrepr is None else argsrepr,
        "kwargsrepr": _cut(repr(dict(kwargs))) if kwargsrepr is None else kwargsrepr,
        "origin": origin or f"gen{os.getpid()}@{platform.node()}",
        "ignore_result": ignore_result,
        "replaced_task_nesting": replaced_task_nesting,
        "stamped_headers": stamped_headers,
        "stamps": dict(stamps) if stamps else {},
    }
    if headers:
        message_headers.update(headers)
    embed = {"callbacks": callbacks, "errbacks": errbacks, "chain": chain, "chord": chord}
    content_type, content_encoding, body = dumps(
        [list(args), dict(kwargs), embed], serializer, headers=message_headers
    )
    if compression:
        body, message_headers["compression"] = compress(body, compression)
    properties: dict[str, Any] = {
        "correlation_id": task_id,
        "reply_to": reply_to,
        "delivery_mode": delivery_mode,
    }
    if expires is not None:
        seconds_left = _aware(expires).timestamp() - now()
        properties["expiration"] = str(max(0, round(seconds_left * 1000)))
    properties["delivery_info"] = {"exchange": exchange, "routing_key": routing_key}
    properties["priority"] = priority
    return Envelope(
        body=body,
        content_type=content_type,
        content_encoding=content_encoding,
        headers=message_headers,
        properties=properties,
    )


@dataclass(frozen=True, slots=True)
class TaskMessage:
    """A task message with its headers read and its body still encoded.

    ``headers`` is the full header dict (for protocol 1, the converted headers with the
    envelope's own headers over them); ``ignore_result`` None means the sender left it to the
    task's own setting.
    """

    name: str
    id: str
    shadow: str | None
    eta: datetime.datetime | None
    expires: datetime.datetime | None
    group: str | None
    group_index: int | None
    retries: int
    timelimit: tuple[float | None, float | None]
    root_id: str | None
    parent_id: str | None
    argsrepr: str | None
    kwargsrepr: str | None
    origin: str | None
    ignore_result: bool | None
    replaced_task_nesting: int
    stamped_headers: list[str] | None
    stamps: dict[str, Any]
    headers: dict[str, Any]
    properties: dict[str, Any]
    content_type: str
    content_encoding: str
    body: bytes
    compression: str | None
    protocol: int = 2
    # A protocol 1 body is decoded on parse (the task name is inside it); kept to skip a redo.
    converted_body: DecodedBody | None = field(default=None, repr=False)

    @property
    def display_name(self) -> str:
        """Name shown in logs and events: the shadow name if set, else the task name."""
        return self.shadow or self.name

    def decode_body(
        self, accept: Collection[str] | None = None, *, max_size: int | None = None
    ) -> DecodedBody:
        """Decompress and deserialize the body; return ``(args, kwargs, embed)``.

        ``embed`` always has ``callbacks``, ``errbacks``, ``chain`` and ``chord`` keys.
        ``max_size`` bounds the decompressed body (``worker_max_message_size``).

        Raises:
            ContentDisallowed: the content type is not in ``accept``.
            DecodeError: the body does not decompress or deserialize, expands past
                ``max_size``, or (a ``SecurityError`` too) fails its signature check
                (``celeriac.security``).
            InvalidTaskError: the body is not ``[args, kwargs, embed]``.
        """
        if self.converted_body is not None:
            args, kwargs, embed = self.converted_body
            return list(args), dict(kwargs), dict(embed)
        return _check_body(self._load(accept, max_size))

    def decode_sent_arguments(
        self, accept: Collection[str] | None = None, *, max_size: int | None = None
    ) -> tuple[Any, Any]:
        """Return the body's args and kwargs as sent, unchecked; None where unreadable.

        For reporting a body that :meth:`decode_body` refused, with what it carried.
        """
        if self.converted_body is not None:
            args, kwargs, _ = self.converted_body
            return args, kwargs
        try:
            body = self._load(accept, max_size)
        except DecodeError:
            return None, None
        if isinstance(body, list | tuple) and len(body) >= 2:
            return body[0], body[1]
        return None, None

    def _load(self, accept: Collection[str] | None, max_size: int | None) -> Any:
        data = self.body
        if self.compression:
            data = decompress(data, self.compression, max_size=max_size)
        return loads(
            data, self.content_type, self.content_encoding, accept=accept, headers=self.headers
        )


def parse_task_message(
    envelope: Envelope,
    *,
    accept: Collection[str] | None = None,
    max_size: int | None = None,
    now: Callable[[], float] = time.time,
) -> TaskMessage:
    """Read a task message's headers; decode the body only for protocol 1.

    ``accept`` and ``max_size`` (of the decompressed body) apply only to protocol 1, whose
    body must be decoded here. ``now`` is the clock an ``eta`` or ``expires`` more than a
    century ahead is measured against.

    Raises:
        InvalidTaskError: required headers are missing, have the wrong type, or hold an
            absurd value (a time before 1970 or a century ahead, a negative or endless
            time limit).
        ContentDisallowed, DecodeError: a protocol 1 body that cannot be read.
    """
    headers = envelope.headers
    if "task" in headers:
        return _from_headers(envelope, headers, protocol=2, converted_body=None, now=now)
    compression = headers.get("compression")
    if compression is not None and not isinstance(compression, str):
        raise InvalidTaskError(f"header 'compression' is not a string: {compression!r}")
    data = envelope.body
    if compression:
        data = decompress(data, compression, max_size=max_size)
    body = loads(data, envelope.content_type, envelope.content_encoding, accept=accept)
    if not is_v1_body(body):
        raise InvalidTaskError("message has no 'task' header and is not a protocol 1 task")
    legacy = convert_v1_body(body)
    merged = {**legacy.headers, **headers}
    return _from_headers(
        envelope,
        merged,
        protocol=1,
        converted_body=(legacy.args, legacy.kwargs, legacy.embed),
        now=now,
    )


def readable_task_id(envelope: Envelope) -> str | None:
    """The task id of a protocol 2 message whose other headers may be unreadable, or None.

    A refused message with a readable id gets its FAILURE stored, so its caller hears of it.
    """
    task_id = envelope.headers.get("id")
    return task_id if isinstance(task_id, str) and task_id else None


def _from_headers(
    envelope: Envelope,
    headers: dict[str, Any],
    *,
    protocol: int,
    converted_body: DecodedBody | None,
    now: Callable[[], float],
) -> TaskMessage:
    name, task_id = headers.get("task"), headers.get("id")
    if not isinstance(name, str) or not name:
        raise InvalidTaskError("task message has no valid 'task' header")
    if not isinstance(task_id, str) or not task_id:
        raise InvalidTaskError(f"task message {name!r} has no valid 'id' header")
    latest = datetime.datetime.fromtimestamp(now(), datetime.UTC) + _LONGEST_HORIZON
    _check_properties(envelope.properties)
    return TaskMessage(
        name=name,
        id=task_id,
        shadow=_optional_str(headers, "shadow"),
        eta=_datetime(headers, "eta", latest),
        expires=_datetime(headers, "expires", latest),
        group=_optional_str(headers, "group"),
        group_index=_optional_int(headers, "group_index"),
        retries=_optional_int(headers, "retries") or 0,
        timelimit=_timelimit(headers.get("timelimit")),
        root_id=_optional_str(headers, "root_id"),
        parent_id=_optional_str(headers, "parent_id"),
        argsrepr=_optional_str(headers, "argsrepr"),
        kwargsrepr=_optional_str(headers, "kwargsrepr"),
        origin=_optional_str(headers, "origin"),
        ignore_result=_optional_bool(headers, "ignore_result"),
        replaced_task_nesting=_optional_int(headers, "replaced_task_nesting") or 0,
        stamped_headers=_stamped_headers(headers.get("stamped_headers")),
        stamps=_stamps(headers.get("stamps")),
        headers=headers,
        properties=envelope.properties,
        content_type=envelope.content_type,
        content_encoding=envelope.content_encoding,
        body=envelope.body,
        compression=_optional_str(headers, "compression"),
        protocol=protocol,
        converted_body=converted_body,
    )


def _check_body(payload: Any) -> DecodedBody:
    """Validate the ``[args, kwargs, embed]`` shape (wire protocol §2.3)."""
    if not isinstance(payload, list | tuple):
        raise InvalidTaskError(
            f"body is not a list: expected [args, kwargs, embed], got {type(payload).__name__}"
        )
    if len(payload) != 3:
        raise InvalidTaskError(
            f"body has {len(payload)} elements: expected 3 ([args, kwargs, embed])"
        )
    args, kwargs, embed = payload
    if not isinstance(args, list | tuple):
        raise InvalidTaskError(f"args is not a list: got {type(args).__name__}")
    if not isinstance(kwargs, Mapping):
        raise InvalidTaskError(f"kwargs is not a mapping: got {type(kwargs).__name__}")
    if embed is None:
        embed = {}
    if not isinstance(embed, Mapping):
        raise InvalidTaskError(f"embed is not a mapping: got {type(embed).__name__}")
    full_embed = dict.fromkeys(_EMBED_KEYS)
    full_embed.update(embed)
    return list(args), dict(kwargs), full_embed


def _cut(text: str) -> str:
    if len(text) <= REPR_MAX_LENGTH:
        return text
    return text[: REPR_MAX_LENGTH - 3] + "..."


def _aware(moment: datetime.datetime) -> datetime.datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=datetime.UTC)
    return moment


def _isoformat(moment: datetime.datetime | None) -> str | None:
    if moment is None:
        return None
    return _aware(moment).astimezone(datetime.UTC).isoformat()


def _datetime(
    headers: Mapping[str, Any], key: str, latest: datetime.datetime
) -> datetime.datetime | None:
    """Read an ISO-8601 time, refusing one before 1970 or later than ``latest``."""
    value = headers.get(key)
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        moment = _aware(value)
    elif isinstance(value, str):
        try:
            moment = _aware(datetime.datetime.fromisoformat(value))
        except ValueError as exc:
            raise InvalidTaskError(f"header {key!r} is not an ISO-8601 time: {value!r}") from exc
    else:
        raise InvalidTaskError(f"header {key!r} is not an ISO-8601 time: {value!r}")
    try:
        is_absurd = not _EARLIEST_MOMENT <= moment <= latest
    except OverflowError:
        is_absurd = True
    if is_absurd:
        raise InvalidTaskError(
            f"header {key!r} is out of range: {value!r} is before 1970 or a century ahead"
        )
    return moment


def _optional_str(headers: Mapping[str, Any], key: str) -> str | None:
    value = headers.get(key)
    if value is None or isinstance(value, str):
        return value
    raise InvalidTaskError(f"header {key!r} is not a string: {value!r}")


def _optional_int(headers: Mapping[str, Any], key: str) -> int | None:
    value = headers.get(key)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise InvalidTaskError(f"header {key!r} is not an integer: {value!r}")


def _optional_bool(headers: Mapping[str, Any], key: str) -> bool | None:
    value = headers.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise InvalidTaskError(f"header {key!r} is not a boolean: {value!r}")


def _timelimit(value: Any) -> tuple[float | None, float | None]:
    """Read ``[hard, soft]``; the order is hard first despite Celery's docs (§2.2)."""
    if value is None:
        return None, None
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise InvalidTaskError(f"header 'timelimit' is not [hard, soft]: {value!r}")
    hard, soft = value
    for limit in (hard, soft):
        if limit is None:
            continue
        if isinstance(limit, bool) or not isinstance(limit, int | float):
            raise InvalidTaskError(f"header 'timelimit' is not [hard, soft]: {value!r}")
        if not (math.isfinite(limit) and 0 <= limit <= _LONGEST_TIME_LIMIT):
            raise InvalidTaskError(
                f"header 'timelimit' holds {limit!r}: a limit is 0 to {_LONGEST_TIME_LIMIT:.0f}"
                " seconds"
            )
    return hard, soft


def _check_properties(properties: Mapping[str, Any]) -> None:
    """Refuse properties the worker would trip on later, in another thread."""
    delivery_info = properties.get("delivery_info")
    if delivery_info is not None and not isinstance(delivery_info, Mapping):
        raise InvalidTaskError(f"property 'delivery_info' is not a mapping: {delivery_info!r}")
    priority = properties.get("priority")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise InvalidTaskError(f"property 'priority' is not an integer: {priority!r}")


def _stamped_headers(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return list(value)
    raise InvalidTaskError(f"header 'stamped_headers' is not a list of names: {value!r}")


def _stamps(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    raise InvalidTaskError(f"header 'stamps' is not a mapping: {value!r}")
