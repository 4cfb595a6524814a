"""Envelopes to AMQP messages and back, as kombu puts them on the wire (edge layer).

Wire protocol §4.1: the body is the payload bytes (no base64), the envelope headers are the
AMQP ``application_headers``, and the envelope properties that are AMQP basic properties
(correlation_id, reply_to, priority, expiration, ...) travel as such. A received message
gets ``delivery_info`` (exchange, routing key, redelivered) in its properties, like
kombu's. Headers the broker adds on its way (dead-lettering through the delay levels,
a quorum queue's delivery count) are read into the delivery count and left out of the
envelope, so a message reads as it was sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import amqp

from celeriac.protocol.envelope import Envelope
from celeriac.transports.amqp_topology import strip_delay_prefix

__all__ = ["EARLIER_DELIVERIES_HEADER", "Received", "from_amqp", "to_amqp"]

PERSISTENT = 2
EARLIER_DELIVERIES_HEADER = "x-celeriac-earlier-deliveries"
"""Deliveries before a ``release`` put the message back as a new one (it keeps its count)."""
QUORUM_COUNT_HEADER = "x-delivery-count"
BROKER_HEADERS = frozenset(
    {
        QUORUM_COUNT_HEADER,
        EARLIER_DELIVERIES_HEADER,
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
    }
)
BASIC_PROPERTIES = (
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "timestamp",
    "type",
    "user_id",
    "app_id",
)


@dataclass(frozen=True, slots=True)
class Received:
    """A message read from a queue, with what the transport needs to settle it."""

    envelope: Envelope
    priority: int
    delivery_count: int


def to_amqp(
    envelope: Envelope, priority: int, *, delayed: bool = False, earlier_deliveries: int = 0
) -> amqp.Message:
    """Build the AMQP message for ``envelope``.

    A ``delayed`` message leaves out ``expiration``: a per-message TTL shorter than a
    delay level's would dead-letter it early to the next level, and RabbitMQ drops the
    property on dead-lettering anyway; the task's ``expires`` header still holds.
    """
    properties: dict[str, Any] = {
        "content_type": envelope.content_type,
        "content_encoding": envelope.content_encoding,
        "delivery_mode": envelope.properties.get("delivery_mode") or PERSISTENT,
        "priority": priority,
    }
    for name in BASIC_PROPERTIES:
        value = envelope.properties.get(name)
        if value is not None and not (delayed and name == "expiration"):
            properties[name] = str(value) if name == "expiration" else value
    headers = dict(envelope.headers)
    if earlier_deliveries:
        headers[EARLIER_DELIVERIES_HEADER] = earlier_deliveries
    return amqp.Message(envelope.body, application_headers=headers, **properties)


def from_amqp(message: amqp.Message) -> Received:
    """Read a delivered message into an envelope and its delivery count.

    The count is exact on quorum queues (``x-delivery-count``); on classic queues RabbitMQ
    only says whether the message was delivered before, which counts as 2.
    """
    properties: dict[str, Any] = dict(message.properties)
    raw_headers = properties.pop("application_headers", None) or {}
    headers = {key: value for key, value in raw_headers.items() if key not in BROKER_HEADERS}
    info = message.delivery_info or {}
    redelivered = bool(info.get("redelivered"))
    if QUORUM_COUNT_HEADER in raw_headers:
        count = int(raw_headers[QUORUM_COUNT_HEADER]) + 1
    else:
        count = 2 if redelivered else 1
    count += int(raw_headers.get(EARLIER_DELIVERIES_HEADER, 0))
    priority = int(properties.get("priority") or 0)
    envelope_properties = {
        name: properties[name]
        for name in (*BASIC_PROPERTIES, "delivery_mode", "priority")
        if properties.get(name) is not None
    }
    envelope_properties["delivery_info"] = {
        "exchange": info.get("exchange", ""),
        "routing_key": strip_delay_prefix(str(info.get("routing_key", ""))),
        "redelivered": redelivered,
    }
    body = message.body
    envelope = Envelope(
        body=body if isinstance(body, bytes) else str(body).encode("utf-8"),
        content_type=properties.get("content_type") or "application/json",
        content_encoding=properties.get("content_encoding") or "utf-8",
        headers=headers,
        properties=envelope_properties,
    )
    return Received(envelope, priority, count)
