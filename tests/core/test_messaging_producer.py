"""Producer.publish over real transports: envelope fields, broadcast, raw bodies, retries."""

from __future__ import annotations

import json
import time

import pytest

from celeriac.exceptions import QueueNotFound
from celeriac.messaging import Producer, retry_over_time
from celeriac.protocol.envelope import Envelope
from celeriac.serialization import decompress, loads
from celeriac.transports.amqp import AmqpTransport
from celeriac.transports.base import (
    Transport,
    TransportError,
)
from tests.faults.switchable import SwitchableTransport


def fetch_one(transport: Transport, queue: str) -> Envelope:
    deliveries = transport.fetch([queue], 10, 2.0)
    assert len(deliveries) == 1
    transport.ack([deliveries[0].tag])
    return deliveries[0].envelope


FAST_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.01, "interval_max": 0.01}


def test_publish_to_queue_builds_the_envelope(transport: Transport) -> None:
    producer = Producer(transport)

    producer.publish(
        [[2, 3], {}, {}],
        routing_key="celery",
        headers={"task": "tasks.add"},
        priority=5,
        correlation_id="id-1",
        reply_to="oid-1",
        expiration=60,
    )

    envelope = fetch_one(transport, "celery")
    assert json.loads(envelope.body) == [[2, 3], {}, {}]
    assert (envelope.content_type, envelope.content_encoding) == ("application/json", "utf-8")
    assert envelope.headers == {"task": "tasks.add"}
    properties = envelope.properties
    assert properties["delivery_mode"] == 2
    assert properties["priority"] == 5
    assert properties["delivery_info"].items() >= {"exchange": "", "routing_key": "celery"}.items()
    assert (properties["correlation_id"], properties["reply_to"]) == ("id-1", "oid-1")
    assert properties["expiration"] == "60000"


def test_publish_with_eta_waits_in_the_broker(transport: Transport) -> None:
    Producer(transport).publish({"x": 1}, routing_key="later", eta=time.time() + 3600)

    assert transport.fetch(["later"], 10, 0.05) == []
    if not isinstance(transport, AmqpTransport):
        # RabbitMQ holds delayed messages in delay levels shared by every queue.
        assert transport.queue_size("later") == 1


def test_publish_serializes_with_the_chosen_serializer(transport: Transport) -> None:
    Producer(transport, serializer="msgpack").publish({"x": 1}, routing_key="q")

    envelope = fetch_one(transport, "q")
    assert envelope.content_type == "application/x-msgpack"
    assert loads(envelope.body, envelope.content_type, envelope.content_encoding) == {"x": 1}


def test_broadcast_exchange_goes_to_subscribers_not_a_queue(transport: Transport) -> None:
    subscription = transport.subscribe("celery.pidbox")

    Producer(transport).publish({"method": "ping"}, exchange="celery.pidbox", delivery_mode=2)

    [envelope] = subscription.get(5)
    subscription.close()
    assert json.loads(envelope.body) == {"method": "ping"}
    assert (
        envelope.properties["delivery_info"].items()
        >= {"exchange": "celery.pidbox", "routing_key": ""}.items()
    )
    assert transport.queue_size("celery.pidbox") == 0


def test_raw_bytes_with_content_type_are_sent_as_they_are(transport: Transport) -> None:
    producer = Producer(transport)

    producer.publish(b"\x00\xff", routing_key="raw", content_type="application/octet-stream")
    producer.publish("héllo", routing_key="text", content_type="text/plain")

    raw, text = fetch_one(transport, "raw"), fetch_one(transport, "text")
    assert (raw.body, raw.content_type, raw.content_encoding) == (
        b"\x00\xff",
        "application/octet-stream",
        "binary",
    )
    assert (text.body, text.content_encoding) == ("héllo".encode(), "utf-8")


def test_content_type_with_an_object_body_is_refused(transport: Transport) -> None:
    with pytest.raises(TypeError, match="bytes or str"):
        Producer(transport).publish({"x": 1}, routing_key="q", content_type="application/json")


def test_compression_sets_header_and_compresses_body(transport: Transport) -> None:
    Producer(transport).publish({"x": "y" * 100}, routing_key="q", compression="zlib")

    envelope = fetch_one(transport, "q")
    assert envelope.headers["compression"] == "application/x-gzip"
    payload = decompress(envelope.body, envelope.headers["compression"])
    assert json.loads(payload) == {"x": "y" * 100}


def test_queue_publish_without_routing_key_is_refused(transport: Transport) -> None:
    with pytest.raises(QueueNotFound, match="routing key ''"):
        Producer(transport).publish({"x": 1})


def test_retry_gives_up_after_max_retries_with_the_error(transport: Transport) -> None:
    switchable = SwitchableTransport(transport, failures=100)
    waits: list[float] = []
    producer = Producer(switchable, on_publish_error=lambda exc, interval: waits.append(interval))

    with pytest.raises(TransportError, match="down"):
        producer.publish({"x": 1}, routing_key="q", retry=True, retry_policy=FAST_POLICY)

    assert switchable.attempts == 3
    assert waits == [0.0, 0.01]


def test_retry_delivers_once_the_transport_is_back(transport: Transport) -> None:
    switchable = SwitchableTransport(transport, failures=2)

    Producer(switchable).publish({"x": 1}, routing_key="q", retry=True, retry_policy=FAST_POLICY)

    assert switchable.attempts == 3
    assert json.loads(fetch_one(transport, "q").body) == {"x": 1}


def test_without_retry_the_first_error_propagates(transport: Transport) -> None:
    switchable = SwitchableTransport(transport, failures=1)

    with pytest.raises(TransportError):
        Producer(switchable).publish({"x": 1}, routing_key="q")

    assert switchable.attempts == 1


def test_retry_intervals_grow_by_step_up_to_max() -> None:
    waits: list[float] = []

    def always_down() -> None:
        raise TransportError("down")

    with pytest.raises(TransportError):
        retry_over_time(
            always_down,
            {"max_retries": 4, "interval_start": 0.5, "interval_step": 0.5, "interval_max": 1.2},
            sleep=waits.append,
        )

    assert waits == [0.5, 1.0, 1.2, 1.2]


def test_default_retry_policy_is_three_retries() -> None:
    attempts: list[int] = []

    def always_down() -> None:
        attempts.append(1)
        raise TransportError("down")

    with pytest.raises(TransportError):
        retry_over_time(always_down, sleep=lambda seconds: None)

    assert len(attempts) == 4
