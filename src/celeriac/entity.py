"""Exchanges, queues and bindings: where messages go, in AMQP's terms (core layer).

``Queue`` and ``Exchange`` carry the names and options Celery users write in
``task_queues`` (``Queue("video", Exchange("media"), routing_key="media.video")``). RabbitMQ
declares them as they are; the other brokers keep only the queues and use the bindings to
decide which queue a message published to an exchange lands in (:func:`bound_queues`).
Objects from kombu with the same attributes are accepted wherever a Queue is (:func:`as_queue`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["Exchange", "Queue", "as_queue", "bound_queues", "topic_matches"]

EXCHANGE_TYPES = frozenset({"direct", "topic", "fanout", "headers"})


@dataclass(frozen=True, slots=True)
class Exchange:
    """An exchange: ``direct`` routes by equal key, ``topic`` by pattern, ``fanout`` to all."""

    name: str = ""
    type: str = "direct"
    durable: bool = True
    auto_delete: bool = False
    delivery_mode: int | None = None
    arguments: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.type not in EXCHANGE_TYPES:
            raise ValueError(
                f"exchange {self.name!r}: unknown type {self.type!r}"
                f" (one of {', '.join(sorted(EXCHANGE_TYPES))})"
            )


@dataclass(slots=True)
class Queue:
    """A named queue bound to an exchange under a routing key (a pattern for topic exchanges).

    ``exchange`` may be given as a name; None leaves it for the app to fill in with
    ``task_default_exchange`` when the queue is added to ``app.amqp.queues``.
    """

    name: str = ""
    exchange: Exchange | str | None = None
    routing_key: str = ""
    durable: bool = True
    exclusive: bool = False
    auto_delete: bool = False
    no_ack: bool = False
    max_priority: int | None = None
    expires: float | None = None
    message_ttl: float | None = None
    max_length: int | None = None
    queue_arguments: dict[str, Any] = field(default_factory=dict)
    binding_arguments: dict[str, Any] = field(default_factory=dict)
    consumer_arguments: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.exchange, str):
            self.exchange = Exchange(self.exchange)

    @property
    def exchange_name(self) -> str:
        """The name of the exchange the queue is bound to ('' for the default exchange)."""
        return self.exchange.name if isinstance(self.exchange, Exchange) else ""

    def binds(self, exchange: str, routing_key: str) -> bool:
        """True if a message published to ``exchange`` with ``routing_key`` reaches this queue."""
        own = self.exchange if isinstance(self.exchange, Exchange) else Exchange("")
        if exchange != own.name:
            return False
        if own.type == "fanout":
            return True
        if own.type == "topic":
            return topic_matches(self.routing_key, routing_key)
        return self.routing_key == routing_key

    def as_dict(self) -> dict[str, Any]:
        """The queue as ``inspect active_queues`` reports it: every field kombu's has.

        Monitors read them by name (Flower's worker page fails on a missing ``alias``).
        """
        exchange = self.exchange if isinstance(self.exchange, Exchange) else Exchange("")
        return {
            "name": self.name,
            "exchange": {
                "name": exchange.name,
                "type": exchange.type,
                "arguments": dict(exchange.arguments) if exchange.arguments else None,
                "durable": exchange.durable,
                "passive": False,
                "auto_delete": exchange.auto_delete,
                "delivery_mode": exchange.delivery_mode,
                "no_declare": False,
            },
            "routing_key": self.routing_key,
            "queue_arguments": dict(self.queue_arguments) or None,
            "binding_arguments": dict(self.binding_arguments) or None,
            "consumer_arguments": dict(self.consumer_arguments) or None,
            "durable": self.durable,
            "exclusive": self.exclusive,
            "auto_delete": self.auto_delete,
            "no_ack": self.no_ack,
            "alias": None,
            "bindings": [],
            "no_declare": None,
            "expires": self.expires,
            "message_ttl": self.message_ttl,
            "max_length": self.max_length,
            "max_length_bytes": None,
            "max_priority": self.max_priority,
        }

    def copy(self, **changes: Any) -> Queue:
        """A copy with some fields changed."""
        return replace(self, **changes)


def as_queue(value: Any) -> Queue:
    """Turn a Queue, a kombu-style queue object or a queue name into a celeriac Queue.

    Raises:
        TypeError: the value has no queue name.
    """
    if isinstance(value, Queue):
        return value
    if isinstance(value, str):
        return Queue(value)
    name = getattr(value, "name", None)
    if not isinstance(name, str):
        raise TypeError(f"not a queue: {value!r}")
    exchange = getattr(value, "exchange", None)
    if exchange is not None and not isinstance(exchange, str | Exchange):
        exchange = Exchange(
            getattr(exchange, "name", "") or "",
            getattr(exchange, "type", "direct") or "direct",
            durable=bool(getattr(exchange, "durable", True)),
            auto_delete=bool(getattr(exchange, "auto_delete", False)),
            delivery_mode=getattr(exchange, "delivery_mode", None),
            arguments=getattr(exchange, "arguments", None),
        )
    return Queue(
        name,
        exchange,
        getattr(value, "routing_key", "") or "",
        durable=bool(getattr(value, "durable", True)),
        exclusive=bool(getattr(value, "exclusive", False)),
        auto_delete=bool(getattr(value, "auto_delete", False)),
        no_ack=bool(getattr(value, "no_ack", False)),
        max_priority=getattr(value, "max_priority", None),
        expires=getattr(value, "expires", None),
        message_ttl=getattr(value, "message_ttl", None),
        max_length=getattr(value, "max_length", None),
        queue_arguments=dict(getattr(value, "queue_arguments", None) or {}),
        binding_arguments=dict(getattr(value, "binding_arguments", None) or {}),
        consumer_arguments=dict(getattr(value, "consumer_arguments", None) or {}),
    )


def bound_queues(queues: Iterable[Queue], exchange: str, routing_key: str) -> list[str]:
    """Name the queues a message published to ``exchange``/``routing_key`` is delivered to.

    The default exchange ``''`` delivers to the queue named by the routing key, as on AMQP.
    """
    if not exchange:
        return [routing_key] if routing_key else []
    return [queue.name for queue in queues if queue.binds(exchange, routing_key)]


def topic_matches(pattern: str, routing_key: str) -> bool:
    """Match a routing key to a binding pattern as an AMQP topic exchange does.

    Words are separated by dots; ``*`` stands for exactly one word, ``#`` for zero or more.
    """
    return pattern == "#" or _words_match(pattern.split("."), routing_key.split("."))


def _words_match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_words_match(rest, words[start:]) for start in range(len(words) + 1))
    if not words:
        return False
    return head in ("*", words[0]) and _words_match(rest, words[1:])
