"""What the RabbitMQ broker declares, as data: queues, exchanges, bindings (edge layer).

Kept apart from ``amqp.py`` so that every name, flag and argument shared with Celery reads
in one place (wire protocol §4). Nothing here does I/O; ``amqp_session.py`` carries the
declarations out, passively first, so that an entity Celery made is used as it is.

Task queue ``X``: a durable queue ``X`` bound with routing key ``X`` to the durable direct
exchange ``X``; tasks are published to the default exchange ``''`` with routing key ``X``.

Delayed messages use the delay levels of Celery ≥5.5's native delayed delivery, with its
names and routing keys, so a delayed message from either side reaches a queue of the
other. Level ``k`` (0-27) is a durable topic exchange and a durable queue, both named
``celery_delayed_k``; the queue holds a message for 2^k seconds (``x-message-ttl``), then
dead-letters it to level ``k - 1`` (level 0 to the topic exchange ``celery_delayed_delivery``).
A routing key is the delay in whole seconds as 28 binary digits, highest bit first, joined
by dots, then the destination routing key: ``0.0.…1.0.1.tasks`` waits 5 s for ``tasks``.
Level ``k``'s queue takes keys whose bit ``k`` is 1; its exchange passes keys whose bit
``k`` is 0 on to level ``k - 1``'s exchange, so a message visits exactly the levels of
its set bits, and a long delay never holds up a short one (each level is FIFO with one
TTL). The delivery exchange routes ``<28 words>.X`` to queue ``X``.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from celeriac.transports.base import MAX_PRIORITY

__all__ = [
    "DELAY_BITS",
    "DELAY_ENTRY_EXCHANGE",
    "DELIVERY_EXCHANGE",
    "MAX_DELAY_SECONDS",
    "Binding",
    "ExchangeSpec",
    "QueueSpec",
    "channel_exchange",
    "delay_binding",
    "delay_seconds",
    "delay_topology",
    "delayed_routing_key",
    "level_name",
    "strip_delay_prefix",
    "subscriber_queue",
    "task_queue",
]

DELAY_BITS = 28
MAX_DELAY_SECONDS: int = 2**DELAY_BITS - 1
DELIVERY_EXCHANGE = "celery_delayed_delivery"
EVENT_CHANNEL = "celeryev"
PIDBOX_SUFFIX = ".pidbox"
QUEUE_TYPES = ("classic", "quorum")
_DELAY_PREFIX = re.compile(rf"^(?:[01]\.){{{DELAY_BITS}}}")


@dataclass(frozen=True, slots=True)
class ExchangeSpec:
    """An exchange as we would create it if it does not exist yet."""

    name: str
    type: str
    durable: bool = True


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A queue as we would create it if it does not exist yet."""

    name: str
    durable: bool = True
    exclusive: bool = False
    auto_delete: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Binding:
    """A binding of a queue (``to_queue``) or of an exchange to ``source``."""

    source: str
    destination: str
    routing_key: str
    to_queue: bool = True


def level_name(level: int) -> str:
    """Name the exchange and queue of delay level ``level`` (Celery's names)."""
    return f"celery_delayed_{level}"


DELAY_ENTRY_EXCHANGE = level_name(DELAY_BITS - 1)
"""Where every delayed message is published: the level of the highest bit."""


def task_queue(name: str, *, max_priority: int | None, queue_type: str) -> QueueSpec:
    """Describe task queue ``name``: durable, no arguments unless options ask for them.

    Quorum queues take no ``x-max-priority`` (RabbitMQ refuses it before 4.0), so a
    quorum queue has none; fetch still orders what it has buffered by priority.
    """
    arguments: dict[str, Any] = {}
    if queue_type == "quorum":
        arguments["x-queue-type"] = "quorum"
    elif max_priority:
        arguments["x-max-priority"] = min(int(max_priority), MAX_PRIORITY)
    return QueueSpec(name, arguments=arguments)


def delay_seconds(eta: float, now: float) -> int:
    """Return the whole seconds to wait for ``eta``, rounded up so it is never early.

    Zero means "now". Delays past the 28 levels (about 8.5 years) are cut to the longest.
    """
    return min(MAX_DELAY_SECONDS, max(0, math.ceil(eta - now - 1e-6)))


def delayed_routing_key(seconds: int, routing_key: str) -> str:
    """Encode a delay and a destination routing key as Celery does.

    A destination key that already carries a delay prefix (a retry of a delayed message
    reads its routing key back from delivery_info) loses it first.
    """
    bits = format(seconds, f"0{DELAY_BITS}b")
    return ".".join(bits) + "." + strip_delay_prefix(routing_key)


def strip_delay_prefix(routing_key: str) -> str:
    """Return the destination routing key of a key that went through the delay levels."""
    return _DELAY_PREFIX.sub("", routing_key, count=1)


def delay_binding(queue: str) -> Binding:
    """Bind task queue ``queue`` to the delivery exchange for exactly its own routing key.

    Celery binds ``#.X``, which also matches a queue named ``a.X``; 28 single-word
    wildcards match only ``X`` itself and still take every delayed key for ``X``.
    """
    return Binding(DELIVERY_EXCHANGE, queue, "*." * DELAY_BITS + queue)


def delay_topology(queue_type: str) -> tuple[list[ExchangeSpec], list[QueueSpec], list[Binding]]:
    """Describe the 28 delay levels and the delivery exchange, as Celery declares them.

    Quorum level queues dead-letter at least once (``x-dead-letter-strategy``), so a
    message is not lost between two levels.
    """
    exchanges = [ExchangeSpec(level_name(level), "topic") for level in range(DELAY_BITS)]
    exchanges.append(ExchangeSpec(DELIVERY_EXCHANGE, "topic"))
    queues: list[QueueSpec] = []
    bindings: list[Binding] = []
    for level in range(DELAY_BITS - 1, -1, -1):
        name = level_name(level)
        arguments: dict[str, Any] = {
            "x-queue-type": queue_type,
            "x-overflow": "reject-publish",
            "x-message-ttl": 2**level * 1000,
            "x-dead-letter-exchange": level_name(level - 1) if level else DELIVERY_EXCHANGE,
        }
        if queue_type == "quorum":
            arguments["x-dead-letter-strategy"] = "at-least-once"
        queues.append(QueueSpec(name, arguments=arguments))
        skipped = "*." * (DELAY_BITS - 1 - level)
        bindings.append(Binding(name, name, skipped + "1.#"))
        next_exchange = level_name(level - 1) if level else DELIVERY_EXCHANGE
        bindings.append(Binding(name, next_exchange, skipped + "0.#", to_queue=False))
    return exchanges, queues, bindings


def channel_exchange(channel: str) -> ExchangeSpec:
    """Map broadcast ``channel`` to its exchange, as Celery declares it.

    ``celeryev`` (events) is a durable topic exchange, ``reply.<name>.pidbox`` (replies to
    remote control) a transient direct exchange, ``<name>.pidbox`` (remote control) a
    transient fanout, and any other channel a transient fanout of its own name.
    """
    if channel == EVENT_CHANNEL:
        return ExchangeSpec(channel, "topic")
    if _is_reply_channel(channel):
        return ExchangeSpec(channel, "direct", durable=False)
    return ExchangeSpec(channel, "fanout", durable=False)


def _is_reply_channel(channel: str) -> bool:
    return channel.startswith("reply.") and channel.endswith(PIDBOX_SUFFIX)


def subscriber_queue(channel: str, routing_key: str | None = None) -> tuple[QueueSpec, str]:
    """Describe a new subscriber's queue on ``channel`` and the key it binds with.

    Exclusive and auto-delete, with Celery's TTLs: ``celeryev.<uuid>`` bound with ``#``
    for events, ``<key>.reply.<name>.pidbox`` bound with ``<key>`` for a remote-control
    client's replies, ``<uuid>.<name>.pidbox`` for remote control, ``<channel>.<uuid>``
    else; a given ``routing_key`` is the binding key.
    """
    token = uuid.uuid4()
    if channel == EVENT_CHANNEL:
        key = "#" if routing_key is None else routing_key
        return _subscriber_queue(f"{channel}.{token}", ttl_ms=5_000, expires_ms=60_000), key
    if _is_reply_channel(channel) and routing_key:
        queue = _subscriber_queue(f"{routing_key}.{channel}", ttl_ms=300_000, expires_ms=10_000)
        return queue, routing_key
    if channel.endswith(PIDBOX_SUFFIX):
        queue = _subscriber_queue(f"{token}.{channel}", ttl_ms=300_000, expires_ms=10_000)
        return queue, routing_key or ""
    queue = _subscriber_queue(f"{channel}.{token}", ttl_ms=None, expires_ms=60_000)
    return queue, routing_key or ""


def _subscriber_queue(name: str, *, ttl_ms: int | None, expires_ms: int) -> QueueSpec:
    arguments: dict[str, Any] = {"x-expires": expires_ms}
    if ttl_ms is not None:
        arguments = {"x-message-ttl": ttl_ms, **arguments}
    return QueueSpec(name, durable=False, exclusive=True, auto_delete=True, arguments=arguments)
