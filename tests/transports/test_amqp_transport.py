"""What only the RabbitMQ transport does: Celery's declarations, delay levels, reconnection.

The contract suite covers the behaviour every broker shares. Each test here runs in a
virtual host of its own, which ``rabbitmqctl`` lists and deletes afterwards.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import amqp
import pytest

from celeriac import Celeriac
from celeriac.protocol.envelope import Envelope
from celeriac.transports import connect
from celeriac.transports.amqp import AmqpTransport
from celeriac.transports.amqp_connection import parse_settings
from celeriac.transports.amqp_session import ack_frames
from celeriac.transports.amqp_topology import (
    DELAY_BITS,
    delay_seconds,
    delayed_routing_key,
    strip_delay_prefix,
)
from celeriac.transports.base import Delivery, TransportError
from tests.servers import close_rabbitmq_connection, rabbitmq_vhost, rabbitmqctl


@pytest.fixture
def vhost_url() -> Iterator[str]:
    with rabbitmq_vhost("amqp") as url:
        yield url


@pytest.fixture
def opened(vhost_url: str) -> Iterator[list[AmqpTransport]]:
    transports: list[AmqpTransport] = []
    yield transports
    for transport in transports:
        transport.close()


def open_transport(url: str, opened: list[AmqpTransport], **options: object) -> AmqpTransport:
    transport = connect(url, **options)
    assert isinstance(transport, AmqpTransport)
    opened.append(transport)
    return transport


def vhost_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def listing(what: str, url: str, *columns: str) -> list[list[str]]:
    output = rabbitmqctl(what, "--no-table-headers", "-p", vhost_of(url), *columns)
    return [line.split("\t") for line in output.splitlines() if line]


def test_task_queue_is_declared_as_celery_declares_it(
    vhost_url: str, opened: list[AmqpTransport]
) -> None:
    transport = open_transport(vhost_url, opened)

    transport.publish("tasks", Envelope(b"{}"))

    queues = listing("list_queues", vhost_url, "name", "durable", "auto_delete", "arguments")
    exchanges = listing("list_exchanges", vhost_url, "name", "type", "durable", "auto_delete")
    bindings = listing("list_bindings", vhost_url, "source_name", "destination_name", "routing_key")
    assert queues == [["tasks", "true", "false", "[]"]]
    assert ["tasks", "direct", "true", "false"] in exchanges
    assert ["tasks", "tasks", "tasks"] in bindings


def test_queue_declared_by_celery_is_used_as_it_is(
    vhost_url: str, opened: list[AmqpTransport]
) -> None:
    settings = parse_settings(vhost_url, {})
    celery = amqp.Connection(
        settings.host, userid="guest", password="guest", virtual_host=settings.virtual_host
    )
    celery.connect()
    try:
        celery.channel().queue_declare("celery", durable=True, auto_delete=False)
    finally:
        celery.close()
    transport = open_transport(vhost_url, opened, max_priority=9, queue_type="quorum")

    transport.publish("celery", Envelope(b"task"), priority=5)
    [delivery] = transport.fetch(["celery"], 1, 2.0)
    transport.ack([delivery.tag])

    assert delivery.envelope.body == b"task"
    queues = listing("list_queues", vhost_url, "name", "type", "arguments")
    assert ["celery", "classic", "[]"] in queues


def test_options_shape_the_queues_the_transport_creates(
    vhost_url: str, opened: list[AmqpTransport]
) -> None:
    classic = open_transport(vhost_url, opened, max_priority=5)
    quorum = open_transport(vhost_url, opened, max_priority=5, queue_type="quorum")

    classic.publish("prioritized", Envelope(b"{}"))
    quorum.publish("replicated", Envelope(b"{}"))

    queues = {
        row[0]: row[1:] for row in listing("list_queues", vhost_url, "name", "type", "arguments")
    }
    assert queues["prioritized"] == ["classic", '[{"x-max-priority",5}]']
    assert queues["replicated"] == ["quorum", '[{"x-queue-type","quorum"}]']


def test_celerys_queue_settings_reach_the_transport_and_options_win(vhost_url: str) -> None:
    app = Celeriac(
        "settings",
        broker=vhost_url,
        task_queue_max_priority=7,
        task_default_queue_type="quorum",
    )
    app.conf.broker_transport_options = {"queue_type": "classic"}
    try:
        app.send_task("tasks.add", (1, 2), queue="prioritized")
    finally:
        app.close()

    queues = {
        row[0]: row[1:] for row in listing("list_queues", vhost_url, "name", "type", "arguments")
    }
    assert queues["prioritized"] == ["classic", '[{"x-max-priority",7}]']


def test_quorum_queue_counts_every_delivery(vhost_url: str, opened: list[AmqpTransport]) -> None:
    transport = open_transport(vhost_url, opened, queue_type="quorum")
    transport.publish("tasks", Envelope(b"again"))

    counts = []
    for _ in range(3):
        [delivery] = transport.fetch(["tasks"], 1, 2.0)
        counts.append(delivery.delivery_count)
        transport.reject([delivery.tag], requeue=True)

    assert counts == [1, 2, 3]


def test_released_message_keeps_its_delivery_count(
    vhost_url: str, opened: list[AmqpTransport]
) -> None:
    transport = open_transport(vhost_url, opened)
    transport.publish("tasks", Envelope(b"kept", headers={"id": "1"}))
    [first] = transport.fetch(["tasks"], 1, 2.0)
    transport.reject([first.tag], requeue=True)
    [second] = transport.fetch(["tasks"], 1, 2.0)

    transport.release([second.tag])
    [third] = transport.fetch(["tasks"], 1, 2.0)

    assert [first.delivery_count, second.delivery_count, third.delivery_count] == [1, 2, 2]
    assert third.envelope.headers == {"id": "1"}


def unacknowledged(url: str, queue: str) -> int:
    """The broker's count of ``queue``'s deliveries not yet acked, once acks have landed."""
    deadline = time.monotonic() + 5.0
    last = -1
    while time.monotonic() < deadline:
        counts = dict(listing("list_queues", url, "name", "messages_unacknowledged"))
        count = int(counts[queue])
        if count == last:
            return count
        last = count
        time.sleep(0.2)
    return last


def test_acks_of_the_oldest_run_go_as_one_multiple_ack() -> None:
    assert ack_frames([3, 4, 5], None) == [(5, True)]
    assert ack_frames([3, 4, 7, 9], 6) == [(4, True), (7, False), (9, False)]
    assert ack_frames([3], 6) == [(3, False)]
    assert ack_frames([7, 9], 5) == [(7, False), (9, False)]


def test_acking_around_a_held_delivery_leaves_it_held(
    vhost_url: str, opened: list[AmqpTransport]
) -> None:
    transport = open_transport(vhost_url, opened)
    for number in range(5):
        transport.publish("tasks", Envelope(str(number).encode()))
    deliveries = transport.fetch(["tasks"], 5, 2.0)
    assert [d.envelope.body for d in deliveries] == [b"0", b"1", b"2", b"3", b"4"]

    transport.ack([deliveries[3].tag, deliveries[0].tag, deliveries[1].tag])
    assert unacknowledged(vhost_url, "tasks") == 2

    transport.reject([deliveries[2].tag], requeue=True)
    transport.ack([deliveries[4].tag])
    [again] = transport.fetch(["tasks"], 1, 2.0)
    assert again.envelope.body == b"2"
    transport.ack([again.tag])
    assert unacknowledged(vhost_url, "tasks") == 0
    assert transport.queue_size("tasks") == 0


def test_fetch_after_the_consumer_was_cancelled_starts_it_again(
    vhost_url: str, opened: list[AmqpTransport]
) -> None:
    transport = open_transport(vhost_url, opened)
    transport.publish("tasks", Envelope(b"first"))
    [first] = transport.fetch(["tasks"], 1, 2.0)
    transport.ack([first.tag])
    rabbitmqctl("delete_queue", "-p", vhost_of(vhost_url), "tasks")
    time.sleep(0.2)

    transport.publish("tasks", Envelope(b"second"))
    [second] = transport.fetch(["tasks"], 1, 2.0)

    assert second.envelope.body == b"second"


def test_short_delay_is_not_held_up_by_a_longer_one_sent_before(
    vhost_url: str, opened: list[AmqpTransport]
) -> None:
    transport = open_transport(vhost_url, opened)
    sent = time.time()
    transport.publish("tasks", Envelope(b"long"), eta=sent + 4)
    transport.publish("tasks", Envelope(b"short"), eta=sent + 1)

    [short] = transport.fetch(["tasks"], 1, 3.0)
    short_at = time.time() - sent
    transport.ack([short.tag])
    [long] = transport.fetch(["tasks"], 1, 5.0)
    long_at = time.time() - sent
    transport.ack([long.tag])

    assert short.envelope.body == b"short"
    assert 0.95 <= short_at < 2.0
    assert long.envelope.body == b"long"
    assert 3.95 <= long_at < 5.5
    assert long.envelope.properties["delivery_info"]["routing_key"] == "tasks"
    assert long.envelope.headers == {}


def test_delay_levels_are_celerys(vhost_url: str, opened: list[AmqpTransport]) -> None:
    transport = open_transport(vhost_url, opened)

    transport.publish("tasks", Envelope(b"{}"), eta=time.time() + 60)

    queues = {row[0]: row[1] for row in listing("list_queues", vhost_url, "name", "arguments")}
    exchanges = {row[0]: row[1] for row in listing("list_exchanges", vhost_url, "name", "type")}
    assert all(f"celery_delayed_{level}" in queues for level in range(DELAY_BITS))
    assert '{"x-message-ttl",1000}' in queues["celery_delayed_0"]
    assert '{"x-dead-letter-exchange","celery_delayed_delivery"}' in queues["celery_delayed_0"]
    assert '{"x-dead-letter-exchange","celery_delayed_4"}' in queues["celery_delayed_5"]
    assert exchanges["celery_delayed_delivery"] == "topic"
    assert exchanges["celery_delayed_27"] == "topic"


def test_delayed_routing_key_is_celerys_format() -> None:
    key = delayed_routing_key(5, "tasks")

    assert key == "0." * 25 + "1.0.1.tasks"
    assert delayed_routing_key(1, key) == "0." * 27 + "1.tasks"
    assert strip_delay_prefix(key) == "tasks"
    assert delay_seconds(100.2, 100.0) == 1
    assert delay_seconds(99.0, 100.0) == 0


def test_events_and_pidbox_exchanges_match_celery(
    vhost_url: str, opened: list[AmqpTransport]
) -> None:
    transport = open_transport(vhost_url, opened)
    events = transport.subscribe("celeryev")
    control = transport.subscribe("celery.pidbox")
    sent = Envelope(
        b'{"type": "task-sent"}',
        properties={"delivery_mode": 1, "delivery_info": {"routing_key": "task.sent"}},
    )

    transport.broadcast("celeryev", sent)
    [received] = events.get(2.0)

    assert received.properties["delivery_info"]["routing_key"] == "task.sent"
    exchanges = listing("list_exchanges", vhost_url, "name", "type", "durable")
    assert ["celeryev", "topic", "true"] in exchanges
    assert ["celery.pidbox", "fanout", "false"] in exchanges
    queues = listing("list_queues", vhost_url, "name", "exclusive", "auto_delete", "arguments")
    [event_queue] = [row for row in queues if row[0].startswith("celeryev.")]
    assert event_queue[1:3] == ["true", "true"]
    assert '{"x-message-ttl",5000}' in event_queue[3]
    assert '{"x-expires",60000}' in event_queue[3]
    events.close()
    control.close()


def test_reconnects_after_the_server_closed_the_connection(
    vhost_url: str, opened: list[AmqpTransport]
) -> None:
    transport = open_transport(vhost_url, opened)
    transport.publish("tasks", Envelope(b"survives"))
    [before] = transport.fetch(["tasks"], 1, 2.0)

    close_rabbitmq_connection(transport.connection_name)
    # Before the transport notices the close, the ack fails (a worker's settlements are
    # then retried); after, it acts on nothing. Either way the message comes back.
    with contextlib.suppress(TransportError):
        transport.ack([before.tag])
    deadline = time.monotonic() + 5.0
    after: list[Delivery] = []
    while not after and time.monotonic() < deadline:
        try:
            after = transport.fetch(["tasks"], 1, 1.0)
        except TransportError:
            continue

    assert [delivery.envelope.body for delivery in after] == [b"survives"]
    assert after[0].delivery_count == 2
    transport.ack([after[0].tag])
    assert transport.queue_size("tasks") == 0


def test_unreachable_broker_raises_transport_error_without_password() -> None:
    transport = connect("amqp://guest:secret@127.0.0.1:1//", connect_timeout=1)

    with pytest.raises(TransportError) as raised:
        transport.publish("tasks", Envelope(b"{}"))

    assert "secret" not in str(raised.value)
    assert "127.0.0.1:1" in str(raised.value)
    transport.close()


@pytest.mark.parametrize(
    ("url", "host", "virtual_host"),
    [
        ("amqp://guest:guest@localhost:5672//", "localhost:5672", "/"),
        ("amqp://localhost", "localhost:5672", "/"),
        ("pyamqp://u:p@rabbit/%2F", "rabbit:5672", "/"),
        ("amqp://u:p@rabbit:5673/jobs", "rabbit:5673", "jobs"),
        ("amqps://u:p@rabbit/jobs", "rabbit:5671", "jobs"),
    ],
)
def test_url_gives_host_and_virtual_host(url: str, host: str, virtual_host: str) -> None:
    settings = parse_settings(url, {})

    assert (settings.host, settings.virtual_host) == (host, virtual_host)
